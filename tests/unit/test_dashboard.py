"""The provisioned Grafana dashboard and Prometheus config, checked against the metrics we export.

A dashboard that names a metric nobody exports shows "No data" and looks healthy: so every name
in every panel's PromQL must be one of ours (from `ingest_tasks.metrics`), one of
celery-exporter's, or Prometheus's own `up`; and every `job` it filters on must be scraped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import ingest_tasks.metrics  # noqa: F401  (registers our collectors in REGISTRY)
import listener.metrics  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "traksense-ingest.json"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana" / "provisioning"

# danihodovic/celery-exporter 0.11 (requirements-exporter.txt); tests/integration/test_exporter.py
# checks that the ones the dashboard uses really appear on its /metrics.
EXPORTER_METRICS = frozenset({
    "celery_task_sent_total", "celery_task_received_total", "celery_task_started_total",
    "celery_task_succeeded_total", "celery_task_failed_total", "celery_task_rejected_total",
    "celery_task_revoked_total", "celery_task_retried_total", "celery_worker_up",
    "celery_worker_tasks_active", "celery_task_runtime_bucket", "celery_task_runtime_count",
    "celery_task_runtime_sum", "celery_queue_length", "celery_active_consumer_count",
    "celery_active_worker_count", "celery_active_process_count",
})
PROMETHEUS_METRICS = frozenset({"up"})

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
PROMQL_WORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                          "and", "or", "unless", "offset"})


def exported_names() -> set[str]:
    """Every series name our listener and workers can expose, suffixes included."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("ingest_"):
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors, $__rate_interval
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    # Not inside another token: `5m` is a duration, `0.95` a number.
    for match in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        is_call = expr[match.end():].lstrip().startswith("(")
        if not is_call and match.group() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def query_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def expressions() -> list[str]:
    return [t["expr"] for p in query_panels() for t in p["targets"]]


def dashboard_metric_names() -> set[str]:
    return set().union(*(metric_names(e) for e in expressions()))


@pytest.mark.parametrize(("expr", "names"), [
    pytest.param("up", {"up"}, id="bare name"),
    pytest.param('count(up{job="worker"} == 1)', {"up"}, id="matcher and comparison"),
    pytest.param("sum by (type) (rate(ingest_messages_total[$__rate_interval]))",
                 {"ingest_messages_total"}, id="grouping labels are not names"),
    pytest.param("histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m])))", {"x_bucket"}, id="quantile"),
    pytest.param('max(a{q="by (x)"}) or b offset 5m', {"a", "b"}, id="keywords and quoted text"),
    pytest.param("sum(rate(a_total[1m])) * 60", {"a_total"}, id="arithmetic"),
])
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_registry_lists_the_contract_metrics() -> None:
    assert {"ingest_messages_total", "ingest_points_total", "ingest_errors_total", "ingest_batch_size_bucket",
            "ingest_latency_seconds_bucket", "ingest_queue_size"} <= exported_names()


def test_the_dashboard_loads_with_a_uid_and_panels() -> None:
    board = dashboard()
    assert board["uid"] == "traksense-ingest"
    assert board["title"]
    assert len(query_panels()) >= 6
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("panel", query_panels(), ids=lambda p: str(p["title"]))
def test_every_panel_queries_prometheus(panel: dict[str, Any]) -> None:
    assert panel["targets"], "a panel without a query"
    for target in panel["targets"]:
        assert target["expr"].strip()
        assert target["datasource"]["uid"] == panel["datasource"]["uid"] == datasource_uid()
    assert expr_balanced(" ".join(t["expr"] for t in panel["targets"]))


@pytest.mark.parametrize("panel", query_panels(), ids=lambda p: str(p["title"]))
def test_every_metric_a_panel_names_is_exported(panel: dict[str, Any]) -> None:
    known = exported_names() | EXPORTER_METRICS | PROMETHEUS_METRICS
    for target in panel["targets"]:
        unknown = metric_names(target["expr"]) - known
        assert not unknown, f"{target['expr']!r} names metrics nobody exports: {sorted(unknown)}"


def test_the_dashboard_shows_what_operators_ask_for() -> None:
    queries = " ".join(expressions())
    for needed in ("rate(ingest_messages_total", "rate(ingest_points_total", "ingest_queue_size",
                   "sum by (reason) (rate(ingest_errors_total", "rate(ingest_task_retries_total",
                   'up{job="worker"}'):
        assert needed in queries, needed
    for histogram in ("ingest_latency_seconds_bucket", "ingest_queue_latency_seconds_bucket"):
        quantiles = {q for q in re.findall(rf"histogram_quantile\(([0-9.]+), [^;]*?{histogram}", queries)}
        assert quantiles >= {"0.5", "0.95", "0.99"}, histogram


def test_every_job_the_dashboard_filters_on_is_scraped() -> None:
    jobs = set(re.findall(r'job="([^"]+)"', " ".join(expressions())))
    assert jobs <= scrape_jobs().keys()


def test_prometheus_scrapes_listener_workers_flower_and_the_exporter() -> None:
    jobs = scrape_jobs()
    assert jobs["listener"]["static_configs"][0]["targets"] == ["listener:9100"]
    assert jobs["worker"]["dns_sd_configs"][0] == {"names": ["worker"], "type": "A", "port": 9101,
                                                   "refresh_interval": "30s"}
    assert jobs["flower"]["static_configs"][0]["targets"] == ["flower:5555"]
    assert jobs["celery-exporter"]["static_configs"][0]["targets"] == ["celery-exporter:9808"]


def test_grafana_provisions_prometheus_and_the_dashboard_folder() -> None:
    sources = yaml.safe_load((GRAFANA / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    assert [s["url"] for s in sources["datasources"]] == ["http://prometheus:9090"]
    providers = yaml.safe_load((GRAFANA / "dashboards" / "traksense.yml").read_text(encoding="utf-8"))
    assert [p["options"]["path"] for p in providers["providers"]] == ["/etc/grafana/dashboards"]


def scrape_jobs() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    return {job["job_name"]: job for job in config["scrape_configs"]}


def datasource_uid() -> str:
    sources = yaml.safe_load((GRAFANA / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    return str(sources["datasources"][0]["uid"])


def expr_balanced(text: str) -> bool:
    depth = {"(": 0, "{": 0, "[": 0}
    closing = {")": "(", "}": "{", "]": "["}
    for char in text:
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            if depth[closing[char]] < 0:
                return False
    return not any(depth.values())

"""danihodovic/celery-exporter, started the way `make run` starts it, counting a real worker's tasks.

It lives in its own virtualenv (.venv-exporter, made by scripts/exporter-env.sh, which `make test`
runs first) because its pins clash with the project's. The broker is a private Redis: the
exporter's inspect broadcasts reach every worker on the same Redis database, and a worker of
another test run sharing that index must not answer them.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingest_tasks.app import create_app
from ingest_tasks.envelope import QUEUE, TASK_NAME
from ingest_tasks.settings import Settings
from tests.integration.test_flower import BROKER_PASSWORD, start_redis_with_password
from tests.support import REDIS_HOST, ROOT, Process, free_port, service_env, start_worker, unique, wait_until
from tests.unit.test_dashboard import dashboard_metric_names

pytestmark = pytest.mark.integration

EXPORTER_PYTHON = ROOT / ".venv-exporter" / "bin" / "python"
SUCCEEDED = "celery_task_succeeded_total"


def start_exporter(broker_url: str, log_dir: Path) -> tuple[Process, int]:
    if not EXPORTER_PYTHON.exists():
        pytest.fail(f"{EXPORTER_PYTHON} is missing: run scripts/exporter-env.sh (make test does)")
    port = free_port()
    argv = [str(EXPORTER_PYTHON), "-c", "from src.cli import cli; cli()", f"--broker-url={broker_url}",
            "--host=127.0.0.1", f"--port={port}", f"--queues={QUEUE}", "--retry-interval=5"]
    exporter = Process("exporter", argv, {}, log_dir)
    wait_until(lambda: scrape_text(exporter, port), timeout=30, what="the exporter's /metrics")
    return exporter, port


def scrape_text(exporter: Process, port: int) -> str | None:
    if exporter.popen.poll() is not None:
        code, log = exporter.popen.returncode, exporter.log()[-3000:]
        raise AssertionError(f"the exporter exited with {code}:\n{log}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return None


def sample(text: str, metric: str, **labels: str) -> float:
    """The sum of `metric` over the series whose labels include `labels` (0 when there are none)."""
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == metric and labels.items() <= s.labels.items())


def test_the_exporter_counts_the_chunks_a_worker_ran(database_url: str, log_dir: Path) -> None:
    redis, redis_port = start_redis_with_password(log_dir)
    broker_url = f"redis://:{BROKER_PASSWORD}@{REDIS_HOST}:{redis_port}/0"
    env = service_env(database_url, 0, unique("ts"), CELERY_BROKER_URL=broker_url)
    worker = start_worker(env, log_dir, concurrency=1)
    exporter, port = start_exporter(broker_url, log_dir)
    try:
        # The exporter subscribes to task events once it serves HTTP; wait for the worker's heartbeat.
        wait_until(lambda: sample(scrape_text(exporter, port) or "", "celery_worker_up") == 1,
                   timeout=30, what="the exporter to see the worker")
        app = create_app(Settings(CELERY_BROKER_URL=broker_url))
        topic = f"traksense/{unique('t')}/s/d/ack"
        for i in range(4):
            payload = json.dumps({"cmd_id": f"c{i}", "ok": True}).encode()
            app.send_task(TASK_NAME, args=(unique("chunk-"), [[topic, payload, 1.0]]), queue=QUEUE)

        def counted() -> str | None:
            text = scrape_text(exporter, port) or ""
            return text if sample(text, SUCCEEDED, name=TASK_NAME) >= 4 else None

        text = wait_until(counted, timeout=30, what=f"{SUCCEEDED} to count 4 chunks")
    finally:
        exporter.stop()
        worker.stop()
        redis.stop()
    assert sample(text, SUCCEEDED, name=TASK_NAME, queue_name=QUEUE) == 4
    assert sample(text, "celery_task_failed_total", name=TASK_NAME) == 0
    assert sample(text, "celery_task_runtime_count", name=TASK_NAME) == 4
    assert sample(text, "celery_queue_length", queue_name=QUEUE) == 0
    assert sample(text, "celery_active_worker_count", queue_name=QUEUE) == 1
    exposed = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    assert {n for n in dashboard_metric_names() if n.startswith("celery_")} <= exposed

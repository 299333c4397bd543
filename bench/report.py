"""Figures from what each design did: the JSON document, the printed table and the ratios.

Definitions (also in the JSON under "definitions"), so a reader never has to guess.
"""

from __future__ import annotations

import os
import platform
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.config import BenchConfig
from bench.runner import Outcome
from bench.workload import Expected

DEFINITIONS = {
    "duration_s": "live: from releasing the publishers to the last commit; backlog: from starting "
    "the listener(s) on a full session queue to the last commit",
    "messages_per_s": "messages published / duration_s (invalid ones included)",
    "points_per_s": "ts_measure rows stored / duration_s (ceiling: messages x points, had they been stored)",
    "db_rows_per_s": "rows stored (ts_measure + ingest_errors) / (last commit - first commit)",
    "latency": "ingested_at - ts of each valid message's first point; ts is the publish time (ms); "
    "ingested_at is its transaction's start time. In backlog mode it includes the time queued.",
    "cpu_s": "CPU seconds (user + system) spent inside the measured window; postgres-backend is the "
    "run database's connections, postgres-background the server's shared processes",
    "us_per_point": "cpu_s / ts_measure rows stored (ceiling: messages x points)",
    "peak_rss_mb": "VmHWM: the highest resident set since the process started",
}


def group_of(role: str) -> str:
    return role.split("/", 1)[0].split("-", 1)[
        0
    ]  # "worker-1/child" -> "worker", "postgres-backend" -> "postgres"


def figures(outcome: Outcome, expected: Expected, points: int) -> dict[str, Any]:
    duration = max(1e-9, outcome.finished - outcome.started)
    stored_points = expected.messages * points if outcome.unit == "messages" else outcome.rows
    window = outcome.finished - outcome.first_commit if outcome.first_commit else None
    exact = (
        outcome.rows == expected.messages
        if outcome.unit == "messages"
        else outcome.rows == expected.rows and outcome.dead == expected.invalid
    )
    return {
        "messages": expected.messages,
        "expected": asdict(expected),
        "landed": {"rows": outcome.rows, "dead": outcome.dead},
        "exact": exact,
        "duration_s": round(duration, 3),
        "messages_per_s": round(expected.messages / duration, 1),
        "points_per_s": round(stored_points / duration, 1),
        "db_rows_per_s": (
            round((outcome.rows + outcome.dead) / window, 1) if window and outcome.unit == "rows" else None
        ),
        "publish": publish_figures(outcome),
        "latency": asdict(outcome.latency) if outcome.latency else None,
        "cpu": cpu_figures(outcome, expected.messages, stored_points),
        "processes": [asdict(u) for u in sorted(outcome.usage, key=lambda u: u.role)],
        "timeline": timeline(outcome),
    }


def publish_figures(outcome: Outcome) -> dict[str, Any]:
    reports = outcome.publishers
    if not reports:
        return {}
    seconds = max(r.finished for r in reports) - min(r.started for r in reports)
    sent = sum(r.sent for r in reports)
    return {
        "sent": sent,
        "seconds": round(seconds, 3),
        "messages_per_s": round(sent / max(seconds, 1e-9), 1),
        "publishers": [
            {
                "index": r.index,
                "sent": r.sent,
                "cpu_s": round(r.cpu_s, 2),
                "peak_rss_mb": round(r.peak_rss_kb / 1024, 1),
            }
            for r in reports
        ],
    }


def cpu_figures(outcome: Outcome, messages: int, points: int) -> dict[str, Any]:
    groups: dict[str, float] = defaultdict(float)
    peaks: dict[str, float] = defaultdict(float)
    for u in outcome.usage:
        groups[group_of(u.role)] += u.cpu_s
        peaks[group_of(u.role)] = max(peaks[group_of(u.role)], u.peak_rss_mb)
    groups["publisher"] += sum(r.cpu_s for r in outcome.publishers)
    peaks["publisher"] = max((r.peak_rss_kb / 1024 for r in outcome.publishers), default=0.0)
    return {
        g: {
            "cpu_s": round(s, 2),
            "us_per_message": round(s / messages * 1e6, 1),
            "us_per_point": round(s / max(points, 1) * 1e6, 2),
            "max_peak_rss_mb": round(peaks[g], 1),
        }
        for g, s in sorted(groups.items())
    }


def timeline(outcome: Outcome) -> list[dict[str, Any]]:
    if outcome.timeline:
        return [
            {
                "t": round(s.at - outcome.started, 3),
                "messages_per_s": s.messages,
                "p50_s": s.p50_s,
                "p95_s": s.p95_s,
                "p99_s": s.p99_s,
            }
            for s in outcome.timeline
        ]
    pairs = zip(outcome.samples, outcome.samples[1:], strict=False)
    return [
        {
            "t": round(b.at - outcome.started, 3),
            "messages_per_s": round((b.landed - a.landed) / max(1e-9, b.at - a.at), 1),
        }
        for a, b in pairs
    ]


def ratios(designs: dict[str, dict[str, Any]]) -> dict[str, float]:
    """ours/ceiling and ours/naive, per backend when there are several ("ours@timescaledb")."""
    out = {}
    for key, ours in designs.items():
        if key.split("@")[0] != "ours":
            continue
        suffix = key[len("ours"):]
        for other in ("ceiling", f"naive{suffix}"):
            if other in designs and designs[other]["messages_per_s"]:
                out[f"{key}/{other}"] = round(ours["messages_per_s"] / designs[other]["messages_per_s"], 3)
    return out


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024**2, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "node": platform.node(),
    }


def document(
    config: BenchConfig,
    argv: list[str],
    started: str,
    designs: dict[str, dict[str, Any]],
    errors: dict[str, str],
) -> dict[str, Any]:
    return {
        "command": "python -m bench " + " ".join(argv),
        "started": started,
        "machine": machine(),
        "config": asdict(config),
        "designs": designs,
        "ratios": ratios(designs),
        "errors": errors,
        "definitions": DEFINITIONS,
    }


def fmt(value: float | None, scale: float = 1.0, digits: int = 0) -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def summary(doc: dict[str, Any]) -> str:
    """The human-readable table printed at the end of a run."""
    lines = [
        f"{'design':<17} {'exact':>5} {'msgs/s':>9} {'points/s':>10} {'db rows/s':>10} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    ]
    for name, d in doc["designs"].items():
        lat = d["latency"] or {}
        lines.append(
            f"{name:<17} {d['exact']!s:>5} {fmt(d['messages_per_s']):>9} "
            f"{fmt(d['points_per_s']):>10} "
            f"{fmt(d['db_rows_per_s']):>10} {fmt(lat.get('p50_s'), 1000):>8} "
            f"{fmt(lat.get('p95_s'), 1000):>8} {fmt(lat.get('p99_s'), 1000):>8} "
            f"{fmt(lat.get('max_s'), 1000):>8}"
        )
    for name, d in doc["designs"].items():
        cpu = ", ".join(
            f"{g} {c['cpu_s']:.1f}s ({c['us_per_message']:.0f} us/msg, {c['us_per_point']:.1f} us/point, "
            f"peak {fmt(c['max_peak_rss_mb'])} MB)"
            for g, c in d["cpu"].items()
        )
        lines.append(f"{name} CPU: {cpu}")
    lines += [f"{k} = {v:.2f}" for k, v in doc["ratios"].items()]
    lines += [f"ERROR {k}: {v}" for k, v in doc["errors"].items()]
    return "\n".join(lines)

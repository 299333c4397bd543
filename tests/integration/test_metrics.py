"""Metrics seen by scraping the real processes' /metrics during an end-to-end run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import (
    VENV_BIN,
    count,
    free_port,
    publisher,
    scrape,
    service_env,
    start_listener,
    start_worker,
    unique,
    wait_until,
)

pytestmark = pytest.mark.integration

TELEM = b'{"schema":"v1","ts":"2025-10-07T15:30:00Z","points":[{"name":"a","t":"float","v":1},' \
        b'{"name":"b","t":"bool","v":true},{"name":"c","t":"enum","v":"X"}]}'


def test_counters_move_by_exactly_what_was_sent(database_url: str, redis_db: int, log_dir: Path) -> None:
    prefix, tenant = unique("ts"), unique("t")
    listener_port, worker_port = free_port(), free_port()
    env = service_env(database_url, redis_db, prefix, METRICS_PORT=str(listener_port),
                      WORKER_METRICS_PORT=str(worker_port))
    worker = start_worker(env, log_dir)
    listener = start_listener(env, log_dir)
    try:
        with publisher() as pub:
            for i in range(7):
                pub.publish(f"{prefix}/{tenant}/s/d{i}/telem", TELEM)
            for i in range(2):
                pub.publish(f"{prefix}/{tenant}/s/d/ack", f'{{"cmd_id":"c{i}","ok":true}}'.encode())
            pub.publish(f"{prefix}/{tenant}/s/d/event", b'{"ts":"2025-10-07T15:30:00Z","type":"boot"}')
            pub.publish(f"{prefix}/{tenant}/s/d/telem", b"nope")
            pub.publish(f"{prefix}/{tenant}/s/d/telem", b"{")
            pub.publish(f"{prefix}/{tenant}/s/d/telem", b'{"schema":"v1"}')
        wait_until(lambda: count(database_url, "ingest_errors", tenant) == 3
                   and count(database_url, "ts_measure", tenant) == 21, what="all rows")
        def worker_done() -> dict[str, float] | None:
            samples = scrape(worker_port)
            return samples if samples.get("ingest_points_total") == 21 else None

        w = wait_until(worker_done, what="worker metrics")
        lst = scrape(listener_port)
    finally:
        listener.stop()
        worker.stop()
    assert w['ingest_messages_total{type="telem"}'] == 7
    assert w['ingest_messages_total{type="ack"}'] == 2
    assert w['ingest_messages_total{type="event"}'] == 1
    assert w['ingest_errors_total{reason="invalid_json"}'] == 2
    assert w['ingest_errors_total{reason="validation_error"}'] == 1
    assert w['ingest_rows_written_total{table="ts_measure"}'] == 21
    assert w['ingest_rows_written_total{table="cmd_ack"}'] == 2
    assert w['ingest_rows_written_total{table="device_event"}'] == 1
    assert w["ingest_latency_seconds_count"] == 8  # telemetry and events carry a device ts
    assert w["ingest_queue_latency_seconds_count"] == 10
    assert w['ingest_latency_seconds_bucket{le="60.0"}'] == 0  # the device ts is a year old
    assert w["ingest_queue_size"] == 0
    assert lst["ingest_listener_received_total"] == 13
    assert lst["ingest_batch_size_sum"] == 13
    assert lst["ingest_batch_size_count"] == lst["ingest_chunks_enqueued_total"] >= 1
    assert lst["ingest_mqtt_connected"] == 1
    assert lst["ingest_queue_size"] == 0


def test_the_listener_health_check_passes_only_while_connected(
    database_url: str, redis_db: int, log_dir: Path
) -> None:
    port = free_port()
    env = service_env(database_url, redis_db, unique("ts"), METRICS_PORT=str(port))
    health = [str(VENV_BIN / "python"), "-m", "listener.health"]
    listener = start_listener(env, log_dir)
    try:
        healthy = subprocess.run(health, env={**env, "PATH": ""}, capture_output=True, text=True, timeout=20,
                                 check=False)
    finally:
        listener.stop()
    unhealthy = subprocess.run(health, env=env, capture_output=True, text=True, timeout=20, check=False)
    assert healthy.returncode == 0, healthy.stderr
    assert unhealthy.returncode == 1
    assert "metrics endpoint" in unhealthy.stderr

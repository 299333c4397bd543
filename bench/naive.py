"""The naive design, for comparison only: one Celery task per message, one INSERT per point.

Started as `celery -A bench.naive worker`. It keeps the guarantees that matter for a fair
comparison (row-level security with the tenant set per message, idempotent inserts, invalid
messages dead-lettered with their bytes) and none of the batching: every message is its own
task, its own transaction and one round trip per row.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime
from typing import Any

import psycopg
from celery import Celery
from celery.signals import worker_process_init

QUEUE = "bench_naive"
TASK_NAME = "bench.naive.store_message"
INSERT_POINT = """
INSERT INTO ts_measure (tenant_id, device_id, point_id, ts, v_num, unit, meta)
VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT DO NOTHING
"""
INSERT_DEAD = """
INSERT INTO ingest_errors (tenant_id, topic, payload, reason, detail) VALUES (%s, %s, %s, %s, %s)
"""

app = Celery("bench_naive", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_serializer="msgpack",
    accept_content=["msgpack"],
    task_ignore_result=True,
    task_acks_late=True,
    task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
)
_conn: list[psycopg.Connection[tuple[Any, ...]]] = []


@worker_process_init.connect
def _connect(**_: object) -> None:
    conn = psycopg.connect(os.environ["DATABASE_URL"])
    conn.execute("SET ROLE ingest_writer")
    conn.commit()
    _conn[:] = [conn]


class Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def parse(payload: bytes) -> tuple[datetime, list[dict[str, Any]], str]:
    try:
        doc = json.loads(payload)
    except ValueError as exc:
        raise Invalid("invalid_json", str(exc)) from exc
    if not isinstance(doc, dict) or doc.get("schema") != "v1":
        raise Invalid("unknown_schema", "no schema v1")
    try:
        ts = datetime.fromisoformat(doc["ts"])
        points = doc["points"]
        for p in points:
            if not isinstance(p["v"], int | float) or not math.isfinite(p["v"]):
                raise Invalid("validation_error", f"point {p['name']}: v is not a number")
    except (KeyError, TypeError, ValueError) as exc:
        raise Invalid("validation_error", repr(exc)) from exc
    return ts, points, json.dumps(doc.get("meta"))


@app.task(name=TASK_NAME)
def store_message(topic: str, payload: bytes) -> None:
    _prefix, tenant, _site, device, _kind = topic.split("/")
    conn = _conn[0]
    with conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
        try:
            ts, points, meta = parse(payload)
        except Invalid as exc:
            conn.execute(INSERT_DEAD, (tenant, topic, payload, exc.reason, str(exc)))
            return
        for p in points:
            conn.execute(INSERT_POINT, (tenant, device, p["name"], ts, p["v"], p.get("u"), meta))

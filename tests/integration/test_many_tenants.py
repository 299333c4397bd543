"""A chunk with thousands of tenants and point names is stored whole, in one task, without retries."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from ingest_tasks.app import create_app
from ingest_tasks.envelope import QUEUE, TASK_NAME
from ingest_tasks.settings import Settings
from tests.support import query, service_env, start_worker, unique

pytestmark = pytest.mark.integration

TENANTS = 3_000


def test_thousands_of_tenants_and_point_names_in_one_chunk_land_in_one_go(
    database_url: str, redis_db: int, log_dir: Path
) -> None:
    run = unique("many")
    messages = []
    for i in range(TENANTS):
        points = [{"name": f"{run}-p{i}-{j}", "t": "float", "v": j} for j in range(5)]
        payload = orjson.dumps({"schema": "v1", "ts": "2025-10-07T15:30:00Z", "points": points})
        messages.append([f"traksense/{run}-t{i}/s/d/telem", payload, time.time()])
    env = service_env(database_url, redis_db, unique("ts"))
    worker = start_worker(env, log_dir)
    try:
        app = create_app(Settings(CELERY_BROKER_URL=env["CELERY_BROKER_URL"]))
        chunk_id = unique("chunk-")
        app.send_task(TASK_NAME, args=(chunk_id, messages), queue=QUEUE)
        worker.wait_for_log(f"chunk {chunk_id}: messages={TENANTS}", timeout=120)
    finally:
        worker.stop()
    rows = query(database_url, "SELECT count(*), count(DISTINCT tenant_id), count(DISTINCT point_id) "
                 "FROM ts_measure WHERE tenant_id LIKE %s", (f"{run}-t%",))
    assert rows == [(TENANTS * 5, TENANTS, TENANTS * 5)]
    assert "retry" not in worker.log().lower()

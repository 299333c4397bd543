"""Transient failures retry with backoff; when the budget is spent the chunk is dead-lettered."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest_tasks.app import create_app
from ingest_tasks.envelope import QUEUE, TASK_NAME
from ingest_tasks.settings import Settings
from tests.support import execute, fresh_database, query, service_env, start_worker, unique, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def own_database() -> Iterator[str]:
    """A database of this test's own, since the test takes privileges away from the writer."""
    with fresh_database("traksense_retry_") as url:
        yield url


def test_a_chunk_that_keeps_failing_ends_in_the_dlq_as_retries_exhausted(
    own_database: str, redis_db: int, log_dir: Path
) -> None:
    env = service_env(own_database, redis_db, unique("ts"), INGEST_RETRY_MAX="2",
                      INGEST_RETRY_BACKOFF_S="0.2", INGEST_RETRY_BACKOFF_MAX_S="0.4")
    execute(own_database, "REVOKE INSERT ON ts_reading FROM ingest_writer")
    valid = b'{"schema":"v1","ts":"2025-10-07T15:30:00Z","points":[{"name":"a","t":"float","v":1}]}'
    now = time.time()  # the listener's clock: ts may be at most a day after it (ingest_tasks.limits)
    messages = [["traksense/acme/s/d/telem", valid, now], ["traksense/acme/s/d/telem", b"\xffbad", now]]
    worker = start_worker(env, log_dir)
    try:
        app = create_app(Settings(CELERY_BROKER_URL=env["CELERY_BROKER_URL"]))
        app.send_task(TASK_NAME, args=(unique("chunk-"), messages), queue=QUEUE)
        rows = wait_until(lambda: query(own_database, "SELECT tenant_id, payload, reason, detail "
                                        "FROM ingest_errors ORDER BY chunk_seq"), what="the dead letters")
    finally:
        worker.stop()
    assert [r[:3] for r in rows] == [("acme", valid, "retries_exhausted"), ("acme", b"\xffbad", "invalid_json")]
    assert "gave up after 2 retries" in rows[0][3]
    assert "permission denied" in rows[0][3]
    assert worker.log().count("retry") >= 2
    assert query(own_database, "SELECT count(*) FROM ts_measure") == [(0,)]

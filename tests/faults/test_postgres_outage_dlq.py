"""Scenario 6: PostgreSQL down longer than the retry budget: retries_exhausted, then a replay lands all."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from ingest_tasks.ledger import SENT
from tests.faults.conftest import Rig
from tests.faults.load import Expected, assert_exact_state
from tests.faults.services import OwnedPostgres
from tests.support import ROOT, VENV_BIN, execute, query, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults]

RETRY = {"INGEST_RETRY_MAX": "2", "INGEST_RETRY_BACKOFF_S": "0.2", "INGEST_RETRY_BACKOFF_MAX_S": "0.5"}
PARKED = "retries exhausted and DLQ unreachable"  # what the worker logs for a chunk it keeps in Redis


def settled_with_given_up_chunks(rig: Rig, expected: Expected, points: int) -> tuple[int] | None:
    """Exhausted messages once every chunk is done: each message is stored or in the DLQ exactly once."""
    if not rig.queue_drained():
        return None
    (rows, exhausted, invalid), = query(rig.database_url, """
        SELECT (SELECT count(*) FROM ts_measure),
               (SELECT count(*) FROM ingest_errors WHERE reason = 'retries_exhausted'),
               (SELECT count(*) FROM ingest_errors WHERE reason <> 'retries_exhausted')""")
    done = rows + exhausted * points == expected.rows and invalid == len(expected.dead)
    return (int(exhausted),) if done else None


def given_up(rig: Rig) -> int:
    (n,), = query(rig.database_url, "SELECT count(*) FROM ingest_errors WHERE reason = 'retries_exhausted'")
    return int(n)


def stored_all_sent_before(rig: Rig, moment: float) -> bool:
    """Every chunk the listener sent before `moment` (unix time) has its outcome committed: a
    worker takes a chunk off the ledger only then."""
    return int(rig.redis.client().zcount(SENT, "-inf", moment)) == 0


def test_chunks_given_up_during_a_long_postgres_outage_are_replayed_from_the_dlq_exactly_once(
    rig_own_pg: tuple[Rig, OwnedPostgres],
) -> None:
    rig, postgres = rig_own_pg
    rig.settings.update(RETRY)
    worker = rig.start_worker()
    rig.start_listener()
    load = rig.load(messages=20_000, rate=1_000).start()
    expected = load.plan.expected()

    # Down far beyond the budget: a chunk cannot even be dead-lettered, so it stays in Redis.
    load.wait_published(0.1)
    postgres.stop()
    worker.wait_for_log(PARKED, timeout=60)
    postgres.start()
    back = time.time()
    # The parked chunks, and every other chunk sent during the outage, get their outcome first:
    # the replay moves about 100 messages a second, so what it has to move is kept small.
    wait_until(lambda: stored_all_sent_before(rig, back), 60, interval=0.2, what="the outage's chunks stored")
    # Back, but refusing the writer's rows (as a read-only failover target would) until a chunk
    # has run out of retries with the DLQ writable, and so ended there as retries_exhausted.
    before = given_up(rig)
    execute(rig.database_url, "REVOKE INSERT ON ts_reading FROM ingest_writer")
    wait_until(lambda: given_up(rig) > before, 60, interval=0.1, what="a chunk given up while rows are refused")
    # Column privileges, as migration 0013 grants them: a table privilege would reach the chunks.
    execute(rig.database_url, "GRANT INSERT (tenant_no, device_no, ts, series, v_num, v_bool, v_text, unit, "
                              "meta, ingested_at) ON ts_reading TO ingest_writer")
    load.finish()

    (exhausted,) = wait_until(lambda: settled_with_given_up_chunks(rig, expected, load.plan.points), 90,
                              interval=0.5, what="every chunk stored or given up")
    assert exhausted > 0

    replay = subprocess.run([str(VENV_BIN / "python"), "-m", "ingest_tasks.dlq", "replay",
                             "--reason", "retries_exhausted"], cwd=ROOT, env={**os.environ, **rig.env()},
                            capture_output=True, text=True, timeout=120, check=False)
    assert replay.returncode == 0, replay.stderr
    assert f"landed={exhausted} still_invalid=0 refused=0" in replay.stdout
    assert_exact_state(rig.database_url, expected)

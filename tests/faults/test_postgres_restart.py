"""Scenario 3: PostgreSQL stopped for 20+ s mid-load: chunks retry with backoff, none is given up."""

from __future__ import annotations

import time

import pytest

from ingest_tasks.retry import RetryPolicy
from tests.faults.conftest import Rig
from tests.faults.load import assert_exact_state, wait_for_everything
from tests.faults.services import OwnedPostgres

pytestmark = [pytest.mark.integration, pytest.mark.faults]

OUTAGE_S = 22
RETRY = {"INGEST_RETRY_MAX": "20", "INGEST_RETRY_BACKOFF_S": "0.5", "INGEST_RETRY_BACKOFF_MAX_S": "4"}


def test_a_postgres_outage_shorter_than_the_retry_budget_only_delays_the_rows(
    rig_own_pg: tuple[Rig, OwnedPostgres],
) -> None:
    rig, postgres = rig_own_pg
    assert RetryPolicy(20, 0.5, 4).budget_s() > OUTAGE_S + 10  # every chunk outlives the outage
    rig.settings.update(RETRY)
    worker = rig.start_worker()
    rig.start_listener()
    load = rig.load(messages=20_000, rate=800).start()  # the load lasts longer than the outage
    expected = load.plan.expected()

    load.wait_published(0.1)
    postgres.stop()
    down_until = time.monotonic() + OUTAGE_S
    worker.wait_for_log("retry 3 in", timeout=OUTAGE_S)  # chunks wait the outage out, backing off
    time.sleep(max(0.0, down_until - time.monotonic()))
    postgres.start()
    load.finish()

    wait_for_everything(rig.database_url, expected, timeout=90, drained=rig.queue_drained)
    assert_exact_state(rig.database_url, expected)  # and none is in the DLQ as retries_exhausted

"""Scenario 4: restart the Redis broker (append-only file on) mid-load: no chunk is lost."""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Rig
from tests.faults.load import assert_exact_state, stored_counts
from tests.support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults]

REDIS_DOWN_S = 5


def test_a_redis_restart_mid_load_loses_no_chunk(rig: Rig) -> None:
    # A chunk a worker held when its connection dropped is handed out again after this timeout.
    rig.settings["CELERY_VISIBILITY_TIMEOUT"] = "15"
    worker = rig.start_worker()
    listener = rig.start_listener()
    load = rig.load(messages=20_000, rate=3_000).start()
    expected = load.plan.expected()

    load.wait_published(0.3)
    rig.redis.stop()
    down_until = time.monotonic() + REDIS_DOWN_S
    # Down until the listener has failed to send a chunk (it holds that chunk's MQTT acks, and the
    # broker keeps the messages), and for at least REDIS_DOWN_S.
    listener.wait_for_log("Redis unreachable", timeout=60)
    time.sleep(max(0.0, down_until - time.monotonic()))
    rig.redis.start()
    load.finish()

    # Celery 5.7 / kombu 5.7 may exit the worker on a lost Redis connection ("Unrecoverable error:
    # AttributeError ... 'hostname'", raised while closing the dead channel): run it supervised.
    workers = [worker]

    def everything_stored() -> bool:
        workers.append(rig.supervise(workers[-1]))
        return stored_counts(rig.database_url) >= (expected.rows, len(expected.dead)) and rig.queue_drained()

    wait_until(everything_stored, 90, interval=0.5, what="every row and dead letter")
    assert_exact_state(rig.database_url, expected)

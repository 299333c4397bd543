"""Scenario 1: SIGKILL a pool process mid-chunk, then the whole worker; a new worker finishes the job.

"Mid-chunk" is made certain, not hoped for: while the test holds a lock that every chunk's
INSERT waits for, it kills a pool process that PostgreSQL shows waiting inside its chunk's
transaction and that the worker reports running that chunk. Success is judged by what the
worker did next (WorkerLostError, the same chunk delivered again) and by the final tables.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.conftest import Rig
from tests.faults.load import assert_exact_state, wait_for_everything
from tests.faults.observe import Inspector, chunk_stuck_in_insert, inserts_held
from tests.faults.services import sigkill
from tests.support import Process, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults]

STUCK_WITHIN_S = 60  # a chunk reaches its INSERT within a batch interval, unless the machine crawls


@pytest.fixture
def inspector(rig: Rig) -> Iterator[Inspector]:
    inspector = Inspector(rig.redis.url())
    yield inspector
    inspector.close()


def received(worker: Process, chunk_id: str) -> int:
    """How often the worker took the chunk from Redis (Celery logs each delivery)."""
    return worker.log().count(f"[{chunk_id}] received")


def test_killing_a_pool_process_and_then_the_whole_worker_loses_and_duplicates_nothing(
    rig: Rig, inspector: Inspector,
) -> None:
    rig.settings["CELERY_VISIBILITY_TIMEOUT"] = "15"  # unacknowledged chunks come back after 15 s
    worker = rig.start_worker()
    rig.start_listener()
    load = rig.load(messages=20_000, rate=3_000).start()
    expected = load.plan.expected()

    def stuck() -> tuple[int, str] | None:
        return chunk_stuck_in_insert(rig.database_url, inspector)

    load.wait_published(0.2)
    with inserts_held(rig.database_url):
        pid, first = wait_until(stuck, STUCK_WITHIN_S, interval=0.05, what="a pool process inside a chunk")
        sigkill(pid)
        # The worker sees its pool process die holding the chunk, and puts the chunk back at the
        # end of the queue (task_reject_on_worker_lost): it is delivered again once its turn comes.
        worker.wait_for_log("WorkerLostError", timeout=60)
        _, second = wait_until(stuck, STUCK_WITHIN_S, interval=0.05, what="a pool process inside a chunk")
        worker.kill_group()  # the main process and every pool process, chunks in hand or prefetched
    restarted = rig.start_worker(name="worker-2")
    load.finish()

    wait_for_everything(rig.database_url, expected, timeout=120, drained=rig.queue_drained)
    assert received(worker, first) + received(restarted, first) >= 2  # the first chunk came back ...
    assert received(restarted, second) >= 1  # ... and so did the one the dead worker held
    assert_exact_state(rig.database_url, expected)

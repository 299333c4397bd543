"""Scenario 1: SIGKILL a pool process mid-chunk, then the whole worker; a new worker finishes the job."""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Rig
from tests.faults.load import assert_exact_state, wait_for_everything
from tests.faults.services import cpu_ticks, pool_children, sigkill
from tests.support import Process

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def ticks_of(pids: list[int]) -> dict[int, int]:
    """CPU ticks of the processes that still exist (a pool process may exit between two reads)."""
    ticks = {}
    for pid in pids:
        try:
            ticks[pid] = cpu_ticks(pid)
        except FileNotFoundError:
            continue
    return ticks


def kill_a_busy_pool_process(worker: Process, attempts: int = 40) -> int:
    """SIGKILL the pool process that is using the CPU until one dies holding a chunk; its pid."""
    for _ in range(attempts):
        before = ticks_of(pool_children(worker.popen.pid))
        time.sleep(0.03)
        after = ticks_of(list(before))
        if not after:
            continue  # the pool was being replaced (a killed process's successor not up yet)
        busiest = max(after, key=lambda pid: after[pid] - before[pid])
        sigkill(busiest)
        time.sleep(0.5)
        if "WorkerLostError" in worker.log():  # Celery says the process died with a task in hand
            return busiest
    raise AssertionError(f"no pool process was killed mid-chunk in {attempts} attempts")


def test_killing_a_pool_process_and_then_the_whole_worker_loses_and_duplicates_nothing(rig: Rig) -> None:
    rig.settings["CELERY_VISIBILITY_TIMEOUT"] = "15"  # unacknowledged chunks come back after 15 s
    worker = rig.start_worker()
    rig.start_listener()
    load = rig.load(messages=20_000, rate=3_000).start()
    expected = load.plan.expected()

    load.wait_published(0.2)
    kill_a_busy_pool_process(worker)
    load.wait_published(0.6)
    worker.kill_group()  # the main process and every pool process, chunks in hand or prefetched
    rig.start_worker(name="worker-2")
    load.finish()

    wait_for_everything(rig.database_url, expected, timeout=120, drained=rig.queue_drained)
    assert_exact_state(rig.database_url, expected)

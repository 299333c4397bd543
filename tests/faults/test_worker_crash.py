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


def kill_a_busy_pool_process(worker: Process, within_s: float = 30.0) -> int:
    """SIGKILL a pool process the moment it is seen using the CPU, until one dies holding a chunk.

    A pool process uses the CPU only while it has a chunk; its tick count moves in 10 ms steps,
    so the loop polls every 5 ms and kills on the first step, while the chunk is still in hand.
    """
    deadline = time.monotonic() + within_s
    kills = 0
    while time.monotonic() < deadline:
        before = ticks_of(pool_children(worker.popen.pid))
        while time.monotonic() < deadline:
            time.sleep(0.005)
            now = ticks_of(list(before))
            if len(now) < len(before):
                break  # the pool is being replaced (a killed process's successor not up yet)
            busy = [pid for pid in now if now[pid] > before[pid]]
            if busy:
                sigkill(busy[0])
                kills += 1
                time.sleep(0.5)
                if "WorkerLostError" in worker.log():  # Celery says the process died with a task in hand
                    return busy[0]
                break
    raise AssertionError(f"no pool process was killed mid-chunk in {within_s:.0f} s ({kills} kills)")


def test_killing_a_pool_process_and_then_the_whole_worker_loses_and_duplicates_nothing(rig: Rig) -> None:
    rig.settings["CELERY_VISIBILITY_TIMEOUT"] = "15"  # unacknowledged chunks come back after 15 s
    # Chunks of ~3,000 messages, one a second: each is in a pool process's hands long enough to be hit.
    rig.settings["INGEST_BATCH_SIZE"] = "3000"
    rig.settings["INGEST_BATCH_MS"] = "1000"
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

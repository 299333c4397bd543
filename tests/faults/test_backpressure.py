"""Scenario 7: workers stopped while 60,000 messages arrive: the listener stays small, the broker
holds the rest, and everything lands once workers return."""

from __future__ import annotations

import threading
import time

import pytest

from tests.faults.conftest import QUEUE, Rig
from tests.faults.load import assert_exact_state, wait_for_everything
from tests.faults.services import rss_kib

pytestmark = [pytest.mark.integration, pytest.mark.faults]

MAX_QUEUE_CHUNKS = 20
BATCH = 200
RSS_LIMIT_KIB = 150 * 1024
QUEUE_SLACK_CHUNKS = 3  # chunks already on their way when the listener sees the limit


class Sampler(threading.Thread):
    """The listener's resident memory and the Redis queue depth, ten times a second."""

    def __init__(self, rig: Rig, pid: int) -> None:
        super().__init__(daemon=True)
        self.rig, self.pid = rig, pid
        self.rss: list[int] = []
        self.depth: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        client = self.rig.redis.client()
        while not self.done.wait(0.1):
            self.rss.append(rss_kib(self.pid))
            self.depth.append(int(client.llen(QUEUE)))


def test_with_workers_stopped_the_listener_stays_bounded_and_everything_lands_later(rig: Rig) -> None:
    rig.settings.update(INGEST_MAX_QUEUE_CHUNKS=str(MAX_QUEUE_CHUNKS), INGEST_BATCH_SIZE=str(BATCH))
    listener = rig.start_listener()
    sampler = Sampler(rig, listener.popen.pid)
    sampler.start()
    load = rig.load(messages=60_000, rate=6_000, points=1).start()
    expected = load.plan.expected()
    load.finish()
    listener.wait_for_log("holding back")  # the listener saw the limit ...
    time.sleep(2)  # ... and is watched a while longer, still polling the full queue
    sampler.done.set()
    sampler.join()

    assert max(sampler.depth) >= MAX_QUEUE_CHUNKS  # the limit was reached ...
    assert max(sampler.depth) <= MAX_QUEUE_CHUNKS + QUEUE_SLACK_CHUNKS  # ... and held
    assert max(sampler.rss) < RSS_LIMIT_KIB, f"listener RSS peaked at {max(sampler.rss) // 1024} MiB"

    rig.start_worker()
    wait_for_everything(rig.database_url, expected, timeout=150, drained=rig.queue_drained)
    assert_exact_state(rig.database_url, expected)

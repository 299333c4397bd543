"""QueueGate: the listener holds back while Redis holds INGEST_MAX_QUEUE_CHUNKS chunks or
INGEST_MAX_QUEUE_BYTES of memory, reading both once a second and counting what it sent since.
The clock is passed in, so each test is a table of (time, what Redis holds, chunks sent)."""

from __future__ import annotations

import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from listener.backpressure import QUEUE_POLL_S, QueueGate, QueueLimits, QueueLoad

LIMITS = QueueLimits(max_chunks=10, max_bytes=1_000)


class ScriptedRedis:
    """Imitates the listener's read of LLEN and INFO memory: each read returns the next load of
    a script (or raises, as a Redis that went away does), and counts the reads."""

    def __init__(self, *loads: QueueLoad | Exception) -> None:
        self._loads = list(loads)
        self.reads = 0

    def __call__(self) -> QueueLoad:
        self.reads += 1
        load = self._loads.pop(0) if len(self._loads) > 1 else self._loads[0]
        if isinstance(load, Exception):
            raise load
        return load


@pytest.mark.parametrize(("load", "full"), [
    pytest.param(QueueLoad(0, 0), False, id="empty"),
    pytest.param(QueueLoad(9, 999), False, id="just under both"),
    pytest.param(QueueLoad(10, 0), True, id="chunks at the limit"),
    pytest.param(QueueLoad(0, 1_000), True, id="memory at the limit"),
    pytest.param(QueueLoad(0, 5_000), True, id="memory over the limit"),
    pytest.param(QueueLoad(50, 5_000), True, id="both over"),
])
def test_the_gate_closes_at_either_limit(load: QueueLoad, full: bool) -> None:
    assert QueueGate(ScriptedRedis(load), LIMITS).check(0.0) is full


def test_redis_is_read_once_a_second_and_what_was_sent_since_counts() -> None:
    redis = ScriptedRedis(QueueLoad(0, 500), QueueLoad(0, 500))
    gate = QueueGate(redis, LIMITS)
    assert gate.check(0.0) is False
    gate.sent(300)
    assert gate.check(0.5) is False  # 800 bytes, by the estimate
    gate.sent(300)
    assert (gate.check(0.9), gate.memory_full, gate.chunks_full) == (True, True, False)  # 1,100: held
    assert redis.reads == 1
    assert gate.check(QUEUE_POLL_S) is False  # the next read says 500 again: the estimate is dropped
    assert redis.reads == 2


def test_chunks_sent_between_reads_count_toward_the_depth() -> None:
    gate = QueueGate(ScriptedRedis(QueueLoad(8, 0)), LIMITS)
    assert gate.check(0.0) is False
    gate.sent(1)
    gate.sent(1)
    assert (gate.check(0.1), gate.chunks_full) == (True, True)


def test_each_change_of_each_limit_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    redis = ScriptedRedis(QueueLoad(0, 2_000), QueueLoad(0, 2_000), QueueLoad(20, 0), QueueLoad(0, 0))
    gate = QueueGate(redis, LIMITS)
    with caplog.at_level(logging.WARNING, logger="listener.backpressure"):
        for now in (0.0, 0.5, 1.0, 2.0, 3.0, 3.5):
            gate.check(now)
    assert [r.getMessage() for r in caplog.records] == [
        "Redis memory in use 2000 bytes reached INGEST_MAX_QUEUE_BYTES 1000: holding back",
        "queue depth 20 reached the limit of 10 chunks: holding back",
        "Redis memory in use 0 bytes is under INGEST_MAX_QUEUE_BYTES 1000: resuming",
        "queue depth 0 is under the limit of 10 chunks: resuming",
    ]


def test_a_failed_read_keeps_the_last_load_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    redis = ScriptedRedis(QueueLoad(0, 5_000), RedisConnectionError("gone"))
    gate = QueueGate(redis, LIMITS)
    assert gate.check(0.0) is True
    with caplog.at_level(logging.WARNING, logger="listener.backpressure"):
        assert gate.check(1.0) is True
    assert "cannot read the queue depth and memory from Redis: gone" in caplog.text

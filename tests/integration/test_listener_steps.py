"""The listener's sender and lost-chunk sweeper against a real Redis, with the clocks passed in:
each wait is recorded instead of slept, so the backoff is checked to the tenth of a second."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Iterator

import pytest
import redis

from ingest_tasks.app import create_app
from ingest_tasks.settings import load_settings
from listener.backoff import REDIS_RETRY
from listener.ledger import SentChunks, Wire
from listener.sender import ChunkSender
from listener.sweeper import LostChunkSweeper, SweepPolicy
from tests.support import REDIS_HOST, queued_chunks, wait_until

pytestmark = pytest.mark.integration

NOTHING_LISTENS = 15400  # a port of this test's own range where no Redis runs
LATE_REDIS = 15401  # where a Redis is started in the middle of a test
WIRE: Wire = [["traksense/t/s/d/telem", b'{"schema":"v1"}', 1.5]]


class Sleeps:
    """Imitates time.sleep: records each wait instead of waiting, and runs `after` at a given count."""

    def __init__(self, after: int = 0, then: Callable[[], None] | None = None) -> None:
        self.waits: list[float] = []
        self._after = after
        self._then = then

    def __call__(self, seconds: float) -> None:
        self.waits.append(round(seconds, 3))
        if len(self.waits) == self._after and self._then is not None:
            self._then()


def sender_for(url: str, monkeypatch: pytest.MonkeyPatch, sleep: Sleeps, stopping: bool = False) -> ChunkSender:
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return ChunkSender(create_app(load_settings()), SentChunks(client), REDIS_RETRY, wall_clock=lambda: 100.0,
                       sleep=sleep, stopping=lambda: stopping)


@pytest.fixture
def late_redis() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for server in started:
        server.terminate()
        server.wait(10)


def test_a_sent_chunk_is_on_the_ledger_and_in_the_queue(redis_db: int, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"redis://{REDIS_HOST}:6379/{redis_db}"
    sleeps = Sleeps()
    assert sender_for(url, monkeypatch, sleeps).send("c1", WIRE) is True
    assert queued_chunks(url) == [("c1", WIRE)]
    assert SentChunks(redis.Redis.from_url(url)).size() == 1 and sleeps.waits == []


def test_while_redis_is_away_the_send_waits_longer_each_time_and_goes_through_when_it_is_back(
    monkeypatch: pytest.MonkeyPatch, late_redis: list[subprocess.Popen[bytes]]
) -> None:
    url = f"redis://{REDIS_HOST}:{LATE_REDIS}/0"

    def start_redis() -> None:
        late_redis.append(subprocess.Popen(["redis-server", "--port", str(LATE_REDIS), "--bind", REDIS_HOST,
                                            "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL))
        wait_until(lambda: _answers(url) or None, what="the late Redis to answer")

    sleeps = Sleeps(after=3, then=start_redis)
    assert sender_for(url, monkeypatch, sleeps).send("c1", WIRE) is True
    assert sleeps.waits == [0.1, 0.2, 0.4]
    assert queued_chunks(url) == [("c1", WIRE)]


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def test_a_stopping_listener_gives_up_once_the_wait_reaches_its_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = Sleeps()
    sender = sender_for(f"redis://{REDIS_HOST}:{NOTHING_LISTENS}/0", monkeypatch, sleeps, stopping=True)
    assert sender.send("c1", WIRE) is False
    assert sleeps.waits == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2]  # the seventh failure is at the 5 s cap


def test_a_lost_chunk_is_sent_again_on_the_sweeps_schedule(redis_db: int, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"redis://{REDIS_HOST}:6379/{redis_db}"
    ledger = SentChunks(redis.Redis.from_url(url))
    ledger.record("lost", WIRE, now=100.0)  # on the ledger, in no queue: a worker lost it
    sender = sender_for(url, monkeypatch, Sleeps())
    sweeper = LostChunkSweeper(ledger, sender.enqueue, SweepPolicy(resend_after_s=30.0, every_s=5.0), REDIS_RETRY,
                               wall_clock=lambda: 131.0, now=0.0)
    assert sweeper.sweep_if_due(4.9) == 0 and queued_chunks(url) == []
    assert sweeper.sweep_if_due(5.0) == 1 and queued_chunks(url) == [("lost", WIRE)]
    redis.Redis.from_url(url).delete("ingest")  # lost again
    assert sweeper.sweep_if_due(10.0) == 0  # sent again at 131: not overdue until 161


def test_a_failed_search_is_tried_again_after_the_backoff(caplog: pytest.LogCaptureFixture) -> None:
    ledger = SentChunks(redis.Redis.from_url(f"redis://{REDIS_HOST}:{NOTHING_LISTENS}/0", socket_connect_timeout=1))
    sweeper = LostChunkSweeper(ledger, lambda _id, _wire: None, SweepPolicy(resend_after_s=30.0, every_s=5.0),
                               REDIS_RETRY, wall_clock=lambda: 131.0, now=0.0)
    with caplog.at_level(logging.WARNING, logger="listener.sweeper"):
        for now in (5.0, 5.09, 5.1, 5.29, 5.3):  # fails at 5.0, again 0.1 s later, again 0.2 s after that
            sweeper.sweep_if_due(now)
    assert [r.getMessage().startswith("cannot search the ledger") for r in caplog.records] == [True] * 3

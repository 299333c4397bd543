"""ReadHold and Inbox: paho's reads wait while the listener holds more messages or bytes than
Receive Maximum allows; the inbox counts what paho's thread handed over. The clock is passed in."""

from __future__ import annotations

import logging

import pytest

from listener.inbox import Inbox
from listener.mqtt import Delivery
from listener.read_hold import HoldPolicy, ReadHold

POLICY = HoldPolicy(max_messages=10, max_bytes=1_000, log_every_s=60.0)


class Clock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("messages", "nbytes", "held"), [
    pytest.param(0, 0, False, id="empty"),
    pytest.param(10, 1_000, False, id="exactly at both bounds"),
    pytest.param(11, 10, True, id="one message too many"),
    pytest.param(1, 1_001, True, id="one byte too many"),
])
def test_reads_wait_only_past_either_bound(messages: int, nbytes: int, held: bool) -> None:
    assert ReadHold(POLICY, lambda: (messages, nbytes), Clock())() is held


def test_a_hold_is_logged_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    hold = ReadHold(POLICY, lambda: (11, 0), clock)
    with caplog.at_level(logging.INFO, logger="listener.read_hold"):
        for clock.now in (0.0, 30.0, 59.9, 60.0):
            assert hold()
    assert len(caplog.records) == 2


def test_the_inbox_counts_what_waits_and_wakes_the_loop_at_a_full_chunk() -> None:
    inbox: Inbox[Delivery] = Inbox(wake_at=2)
    first = Delivery("t/a", b"12345", 0.0, 1, 1, 1, 8)
    inbox.put(first)
    assert (len(inbox), inbox.bytes, inbox.wake.is_set()) == (1, 8, False)
    inbox.put(first)
    assert inbox.wake.is_set()
    assert inbox.take() == [first, first]
    assert (len(inbox), inbox.bytes) == (0, 0)

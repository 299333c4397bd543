"""The listener's loop sleeps until the oldest message is due, but never longer than idle_wake_s,
and only idle_wake_s while sending is held (MQTT down, Redis full)."""

from __future__ import annotations

import pytest

from listener.service import LOOP, seconds_until_due

IDLE = LOOP.idle_wake_s


@pytest.mark.parametrize(("deadline", "now", "held", "wait"), [
    pytest.param(None, 10.0, False, IDLE, id="nothing waits"),
    pytest.param(10.02, 10.0, False, 0.02, id="due before the idle wake"),
    pytest.param(11.0, 10.0, False, IDLE, id="due long after"),
    pytest.param(9.0, 10.0, False, 0.0, id="already due"),
    pytest.param(9.0, 10.0, True, IDLE, id="due but held"),
])
def test_the_loop_sleeps_until_due_at_most_idle_wake(deadline: float | None, now: float, held: bool,
                                                     wait: float) -> None:
    assert seconds_until_due(deadline, now, held, IDLE) == pytest.approx(wait)

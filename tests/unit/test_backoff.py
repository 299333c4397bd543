"""Backoff: the listener's one retry wait, doubling from first_s to cap_s; a table of failures in a row."""

from __future__ import annotations

import pytest

from listener.backoff import REDIS_RETRY, Backoff


@pytest.mark.parametrize(("failures", "delay", "at_cap"), [
    pytest.param(1, 0.1, False, id="first failure"),
    pytest.param(2, 0.2, False, id="second doubles"),
    pytest.param(6, 3.2, False, id="sixth, still under the cap"),
    pytest.param(7, 5.0, True, id="seventh reaches the cap"),
    pytest.param(10_000, 5.0, True, id="a long outage stays at the cap"),
])
def test_the_wait_doubles_up_to_its_cap(failures: int, delay: float, at_cap: bool) -> None:
    assert REDIS_RETRY.delay(failures) == pytest.approx(delay)
    assert REDIS_RETRY.at_cap(failures) is at_cap


@pytest.mark.parametrize(("first_s", "cap_s"), [
    pytest.param(0.0, 1.0, id="no first wait"),
    pytest.param(2.0, 1.0, id="first above the cap"),
    pytest.param(1.0, float("inf"), id="no cap"),
])
def test_a_policy_that_makes_no_sense_is_refused(first_s: float, cap_s: float) -> None:
    with pytest.raises(ValueError, match="invalid backoff"):
        Backoff(first_s, cap_s)

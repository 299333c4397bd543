"""RetryPolicy: exponential backoff with equal jitter, capped, and when to give up."""

from __future__ import annotations

import math

import pytest

from ingest_tasks.retry import RetryPolicy

POLICY = RetryPolicy(max_retries=10, base_s=1.0, cap_s=60.0)
ALMOST_ONE = 0.999_999
LARGEST_RANDOM = 1 - 2**-53  # the largest random.random()


@pytest.mark.parametrize(
    ("max_retries", "base_s", "cap_s"),
    [
        pytest.param(-1, 1.0, 60.0, id="negative retries"),
        pytest.param(3, 0.0, 60.0, id="zero base"),
        pytest.param(3, -1.0, 60.0, id="negative base"),
        pytest.param(3, 10.0, 5.0, id="cap below base"),
        pytest.param(3, math.nan, 60.0, id="NaN base"),
        pytest.param(3, 1.0, math.nan, id="NaN cap"),
        pytest.param(3, 1.0, math.inf, id="infinite cap"),
    ],
)
def test_an_invalid_policy_raises(max_retries: int, base_s: float, cap_s: float) -> None:
    with pytest.raises(ValueError, match="invalid retry policy"):
        RetryPolicy(max_retries, base_s, cap_s)


@pytest.mark.parametrize(
    ("retries_done", "rand", "countdown"),
    [
        pytest.param(0, 0.0, 0.5, id="first retry, no jitter"),
        pytest.param(0, 0.5, 0.75, id="first retry, half jitter"),
        pytest.param(1, 0.0, 1.0, id="second retry doubles"),
        pytest.param(3, 0.0, 4.0, id="fourth retry"),
        pytest.param(3, 0.5, 6.0, id="fourth retry, half jitter"),
        pytest.param(5, 0.0, 16.0, id="last below the cap"),
        pytest.param(6, 0.0, 30.0, id="capped: half of the cap"),
        pytest.param(50, 0.5, 45.0, id="far beyond the cap"),
        pytest.param(5000, 0.0, 30.0, id="a huge retry count does not overflow"),
    ],
)
def test_countdown_doubles_up_to_the_cap(retries_done: int, rand: float, countdown: float) -> None:
    assert POLICY.countdown(retries_done, rand) == countdown


@pytest.mark.parametrize("retries_done", range(12))
def test_countdown_stays_between_half_and_all_of_its_ceiling(retries_done: int) -> None:
    ceiling = min(60.0, 2.0**retries_done)
    assert POLICY.countdown(retries_done, 0.0) == ceiling / 2
    assert ceiling / 2 < POLICY.countdown(retries_done, ALMOST_ONE) < ceiling
    assert POLICY.countdown(retries_done, ALMOST_ONE) == pytest.approx(ceiling)


def test_no_countdown_is_longer_than_the_cap() -> None:
    policy = RetryPolicy(max_retries=3, base_s=5.0, cap_s=5.0)
    assert max(policy.countdown(n, LARGEST_RANDOM) for n in range(100)) == 5.0


@pytest.mark.parametrize(
    ("max_retries", "retries_done", "exhausted"),
    [
        pytest.param(3, 0, False, id="first failure"),
        pytest.param(3, 2, False, id="one retry left"),
        pytest.param(3, 3, True, id="all retries done"),
        pytest.param(3, 4, True, id="past the limit"),
        pytest.param(0, 0, True, id="no retries at all"),
    ],
)
def test_exhausted_after_max_retries(max_retries: int, retries_done: int, exhausted: bool) -> None:
    assert RetryPolicy(max_retries, 1.0, 60.0).exhausted(retries_done) is exhausted


@pytest.mark.parametrize(
    ("policy", "budget"),
    [
        pytest.param(RetryPolicy(0, 1.0, 60.0), 0.0, id="no retries"),
        pytest.param(RetryPolicy(3, 1.0, 60.0), 3.5, id="three retries"),
        pytest.param(RetryPolicy(10, 1.0, 60.0), 0.5 + 1 + 2 + 4 + 8 + 16 + 30 * 4, id="ten retries, capped"),
        pytest.param(RetryPolicy(2000, 1.0, 60.0), 31.5 + 30 * 1994, id="huge count"),
    ],
)
def test_the_budget_is_the_sum_of_the_shortest_countdowns(policy: RetryPolicy, budget: float) -> None:
    assert policy.budget_s() == pytest.approx(budget)

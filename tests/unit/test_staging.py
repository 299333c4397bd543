"""StagingTrigger: stage when the connection's window (the most unacknowledged messages it had us hold)
is reached and no delivery came for quiet_s; probe with probe_quiet_s first and every probe_every
stagings, so a broker with a larger window shows it; never once a full chunk fits in the window.
The clock is passed in: each test is a table of (time, what happened)."""

from __future__ import annotations

import pytest

from listener.staging import StagingPolicy, StagingTrigger

POLICY = StagingPolicy(quiet_s=0.25, probe_quiet_s=1.0, probe_every=3, near=4)  # exact in binary


def trigger(max_window: int = 100) -> StagingTrigger:
    t = StagingTrigger(POLICY, max_window)
    t.follow(1)
    return t


def stage_once(t: StagingTrigger, now: float) -> None:
    """One delivery at `now` that the trigger stages once its quiet has passed."""
    t.arrived(now)
    assert t.due(1, now + POLICY.probe_quiet_s)
    t.staged()


@pytest.mark.parametrize(("quiet", "due"), [
    pytest.param(0.5, False, id="the first staging of a connection is a probe: the short quiet is too soon"),
    pytest.param(1.0, True, id="the probe's quiet has passed"),
])
def test_a_new_connection_probes_before_its_first_staging(quiet: float, due: bool) -> None:
    t = trigger()
    t.arrived(1.0)
    assert t.due(1, 1.0 + quiet) is due


def test_after_the_probes_one_message_at_a_time_is_staged_after_the_short_quiet() -> None:
    t = trigger()
    stage_once(t, 1.0)  # the first probe finds a window of 1 (from nothing): probe again
    stage_once(t, 1.5)  # the second finds no more: the short quiet from now on
    t.arrived(2.0)
    assert t.due(1, 2.125) is False  # ejabberd: one in flight; a little longer to be sure
    assert t.wait_s(1, 2.125) == 0.125
    assert t.due(1, 2.25) is True


def test_below_the_window_nothing_is_staged_the_broker_may_send_more() -> None:
    t = trigger()
    t.arrived(1.0)
    assert t.due(10, 1.0) is False and t.window == 10
    assert t.due(9, 5.0) is False and t.wait_s(9, 5.0) is None


def test_a_probe_that_sees_more_arrive_grows_the_window_and_staging_waits_for_it() -> None:
    t = trigger()
    for i, now in enumerate([1.0, 1.5, 2.0, 2.5], start=1):  # a moderate rate
        t.arrived(now)
        assert t.due(i, now + 0.375) is False  # the probe's quiet never passes
    assert t.window == 4
    assert t.due(3, 9.0) is False  # after a chunk went out, fewer than the window: no staging


def test_every_probe_every_stagings_a_probe_waits_longer() -> None:
    t = trigger()
    for i in range(3):
        stage_once(t, float(i))
    t.arrived(10.0)
    assert t.due(1, 10.5) is False  # the 4th decision is a probe again
    assert t.due(1, 11.0) is True


def test_a_window_that_holds_a_full_chunk_never_stages_again_on_that_connection() -> None:
    t = trigger(max_window=100)
    t.arrived(1.0)
    assert t.due(100, 1.0) is False and not t.active
    assert t.due(1, 9.0) is False and t.wait_s(1, 9.0) is None and not t.wake_per_delivery(1)


def test_a_new_connection_learns_its_window_again() -> None:
    t = trigger(max_window=100)
    t.due(100, 1.0)
    t.follow(2)
    assert t.active and t.window == 0 and t.stagings == 0


def test_after_a_failed_staging_none_is_tried_for_retry_after_s() -> None:
    t = trigger()
    stage_once(t, 1.0)
    t.arrived(2.0)
    t.failed(2.0)
    assert t.due(1, 2.5) is False and t.wait_s(1, 2.5) is None
    assert t.due(1, 2.0 + POLICY.retry_after_s) is True


@pytest.mark.parametrize(("window_seen", "unacked", "wake"), [
    pytest.param(1, 0, True, id="ejabberd: its next message comes right after our ack"),
    pytest.param(50, 40, False, id="far from the window"),
    pytest.param(50, 46, True, id="near the window"),
])
def test_deliveries_wake_the_loop_near_the_window(window_seen: int, unacked: int, wake: bool) -> None:
    t = trigger()
    t.due(window_seen, 0.0)
    assert t.wake_per_delivery(unacked) is wake


@pytest.mark.parametrize("policy", [
    pytest.param({"quiet_s": 0.0}, id="no quiet"),
    pytest.param({"quiet_s": 0.02, "probe_quiet_s": 0.01}, id="probe shorter than quiet"),
    pytest.param({"probe_every": 0}, id="never probing"),
    pytest.param({"near": 0}, id="near 0"),
])
def test_an_invalid_policy_is_refused(policy: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="invalid staging policy"):
        StagingPolicy(**policy)  # type: ignore[arg-type]


def test_a_probe_that_found_a_larger_window_is_followed_by_another_and_one_that_did_not_is_not() -> None:
    t = trigger()
    t.arrived(1.0)
    assert t.due(5, 2.0)  # the first probe: five arrived before it went quiet
    t.staged()
    t.arrived(3.0)
    assert t.due(5, 3.0 + POLICY.quiet_s) is False  # the window grew (0 -> 5): this one probes too
    assert t.due(5, 3.0 + POLICY.probe_quiet_s)
    t.staged()  # it found no more than 5
    t.arrived(5.0)
    assert t.due(5, 5.0 + POLICY.quiet_s)  # so the short quiet is back

"""Session presence over a process's connects: when a missing session is an alarm, and the names of
a server's DISCONNECT reasons (a metric label, so from a closed set)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from listener.session_alarm import DISCONNECT_REASONS, OTHER_REASON, SessionWatch, Verdict, disconnect_reason_name

R, N, L, U = Verdict.RESUMED, Verdict.NEW, Verdict.LOST, Verdict.UNKNOWN


@pytest.mark.parametrize(("keeps", "expected_at_start", "presents", "verdicts"), [
    pytest.param(True, False, [False, True], [N, R], id="first start of the client id, then resumed"),
    pytest.param(True, False, [False, False], [N, L], id="first start, then a reconnect the broker forgot"),
    pytest.param(True, True, [False], [L], id="a session existed before this start and is gone"),
    pytest.param(True, True, [True, True], [R, R], id="resumed at start and after a reconnect"),
    pytest.param(True, None, [False, False], [U, L], id="could not tell at start; later a loss"),
    pytest.param(True, None, [True], [R], id="could not tell at start, but the session is there"),
    pytest.param(False, True, [False, False], [N, N], id="no session kept (expiry 0): never a loss"),
    pytest.param(True, False, [True, False, False], [R, L, L], id="every reconnect that finds none counts"),
])
def test_a_missing_session_is_lost_only_where_one_was_expected(
    keeps: bool, expected_at_start: bool | None, presents: list[bool], verdicts: list[Verdict],
) -> None:
    watch = SessionWatch(keeps, expected_at_start)
    assert [watch.connected(p) for p in presents] == verdicts


@pytest.mark.parametrize(("code", "name"), [
    pytest.param(0x8E, "session_taken_over", id="session taken over"),
    pytest.param(0x97, "quota_exceeded", id="quota exceeded (ejabberd's full queue)"),
    pytest.param(0x8B, "server_shutting_down", id="server shutting down"),
    pytest.param(0x04, OTHER_REASON, id="a client-only code"),
    pytest.param(0xA2, OTHER_REASON, id="a code the server may send but we do not name"),
])
def test_a_disconnect_reason_code_has_its_name(code: int, name: str) -> None:
    assert disconnect_reason_name(code) == name


@given(st.integers(0, 255))
def test_every_reason_code_maps_into_a_small_closed_set(code: int) -> None:
    assert disconnect_reason_name(code) in {*DISCONNECT_REASONS.values(), OTHER_REASON}
    assert len({*DISCONNECT_REASONS.values(), OTHER_REASON}) <= 20

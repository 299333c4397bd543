"""Session presence over a process's connects: when a missing session is an alarm (logged and counted),
when the session is recorded, and the names of a server's DISCONNECT reasons (a metric label, so
from a closed set)."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from listener.session import (
    DISCONNECT_REASONS,
    OTHER_REASON,
    SessionAlarm,
    SessionWatch,
    Verdict,
    disconnect_reason_name,
)

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


class RecordedMemory:
    """A session memory kept in this object, as Redis keeps it for the listener; `None` is an unreachable store."""

    def __init__(self, had_session: bool | None) -> None:
        self.had_session = had_session
        self.remembered = 0

    def recall(self) -> bool | None:
        return self.had_session

    def remember(self) -> bool:
        self.remembered += 1
        return self.had_session is not None


def session_lost_count() -> float:
    return REGISTRY.get_sample_value("ingest_mqtt_session_lost_total") or 0.0


@pytest.mark.parametrize(("had_session", "present", "verdict", "lost"), [
    pytest.param(True, False, L, 1, id="recorded in Redis, missing at the broker: an alarm"),
    pytest.param(False, False, N, 0, id="first start of the client id: no alarm"),
    pytest.param(True, True, R, 0, id="resumed"),
    pytest.param(None, False, U, 0, id="Redis unreachable: a warning, not counted"),
])
def test_the_first_connect_is_judged_by_what_the_memory_recalls(
    had_session: bool | None, present: bool, verdict: Verdict, lost: int, caplog: pytest.LogCaptureFixture,
) -> None:
    alarm = SessionAlarm("cid-1", keeps_session=True, memory=RecordedMemory(had_session))
    before = session_lost_count()
    alarm.starting()
    with caplog.at_level(logging.WARNING, logger="listener.session"):
        assert alarm.connected(present) is verdict
    assert session_lost_count() - before == lost
    assert any("session lost" in r.message and r.levelno == logging.ERROR for r in caplog.records) == bool(lost)


def test_the_session_is_remembered_once_per_process_and_retried_until_it_is() -> None:
    memory = RecordedMemory(None)  # unreachable at first
    alarm = SessionAlarm("cid-2", keeps_session=True, memory=memory)
    alarm.subscribed()
    memory.had_session = True  # reachable again
    alarm.subscribed()
    alarm.subscribed()
    assert memory.remembered == 2


def test_without_a_kept_session_nothing_is_recalled_or_remembered() -> None:
    memory = RecordedMemory(True)
    alarm = SessionAlarm("cid-3", keeps_session=False, memory=memory)
    alarm.starting()
    assert alarm.connected(False) is N
    alarm.subscribed()
    assert memory.remembered == 0


def test_a_server_disconnect_is_an_error_counted_by_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    def count() -> float:
        return REGISTRY.get_sample_value("ingest_mqtt_disconnects_total", {"reason": "quota_exceeded"}) or 0.0

    before = count()
    with caplog.at_level(logging.ERROR, logger="listener.session"):
        SessionAlarm("cid-4", keeps_session=True).server_disconnected(0x97, "Quota exceeded", "queue full")
    assert count() - before == 1
    (record,) = caplog.records
    assert "0x97" in record.message and "'queue full'" in record.message and "max_queue" in record.message

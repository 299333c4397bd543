"""Whose problem a database error is, by SQLSTATE: the message's (db_rejected) or the chunk's (retry)."""

from __future__ import annotations

import pytest

from ingest_tasks.errors import Blame, blame


@pytest.mark.parametrize(("sqlstate", "expected"), [
    # The row's own data: db_rejected for the message, its neighbours stored.
    pytest.param("54000", Blame.MESSAGE, id="index row size exceeds btree maximum"),
    pytest.param("54001", Blame.MESSAGE, id="stack depth limit exceeded (deep jsonb)"),
    pytest.param("22021", Blame.MESSAGE, id="NUL in text"),
    pytest.param("22P05", Blame.MESSAGE, id="jsonb refuses \\u0000"),
    pytest.param("22P02", Blame.MESSAGE, id="invalid JSON text"),
    pytest.param("22003", Blame.MESSAGE, id="numeric out of range"),
    pytest.param("22008", Blame.MESSAGE, id="timestamp out of range"),
    pytest.param("22000", Blame.MESSAGE, id="psycopg refused a value before sending it"),
    pytest.param("23514", Blame.MESSAGE, id="an operator's CHECK constraint"),
    pytest.param("23502", Blame.MESSAGE, id="NOT NULL"),
    pytest.param("23505", Blame.MESSAGE, id="unique violation"),
    pytest.param("21000", Blame.MESSAGE, id="ON CONFLICT touching a row twice"),
    pytest.param("44000", Blame.MESSAGE, id="WITH CHECK OPTION"),
    # Transient: the chunk is retried, every write being idempotent.
    pytest.param(None, Blame.CHUNK, id="connection broke with no SQLSTATE"),
    pytest.param("08006", Blame.CHUNK, id="connection failure"),
    pytest.param("08001", Blame.CHUNK, id="cannot connect"),
    pytest.param("57P01", Blame.CHUNK, id="admin shutdown"),
    pytest.param("57P02", Blame.CHUNK, id="crash shutdown"),
    pytest.param("57P03", Blame.CHUNK, id="cannot connect now (starting up)"),
    pytest.param("57014", Blame.CHUNK, id="statement timeout (query canceled)"),
    pytest.param("40001", Blame.CHUNK, id="serialization failure"),
    pytest.param("40P01", Blame.CHUNK, id="deadlock"),
    pytest.param("53100", Blame.CHUNK, id="disk full"),
    pytest.param("53200", Blame.CHUNK, id="out of memory"),
    pytest.param("53300", Blame.CHUNK, id="too many connections"),
    pytest.param("55P03", Blame.CHUNK, id="lock timeout"),
    pytest.param("58030", Blame.CHUNK, id="I/O error"),
    pytest.param("25006", Blame.CHUNK, id="read-only standby after a failover"),
    # Misconfiguration: retried until an operator fixes it, never a DLQ flood.
    pytest.param("42P01", Blame.CHUNK, id="table missing before migrations"),
    pytest.param("42501", Blame.CHUNK, id="privilege or row-level security"),
    pytest.param("42703", Blame.CHUNK, id="column missing"),
    pytest.param("28P01", Blame.CHUNK, id="password authentication failed"),
    pytest.param("3D000", Blame.CHUNK, id="database missing"),
    # Neither: the store finds out by writing the chunk apart, down to single messages.
    pytest.param("P0001", Blame.UNKNOWN, id="a trigger's RAISE EXCEPTION"),
    pytest.param("XX000", Blame.UNKNOWN, id="internal error"),
    pytest.param("0A000", Blame.UNKNOWN, id="feature not supported"),
    pytest.param("55000", Blame.UNKNOWN, id="object not in prerequisite state"),
])
def test_each_sqlstate_is_blamed_on_the_message_or_the_chunk(sqlstate: str | None, expected: Blame) -> None:
    assert blame(sqlstate) is expected

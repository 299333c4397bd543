"""What the database refuses costs only the message it refused; a dead letter is always writable.

Messages are built as the pure stage's `Accepted` outcomes directly, bypassing its limits, so each
value here is one that PostgreSQL itself refuses (an index entry too large, NUL, JSON it will not
take), written through the real store on a real database.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from ingest_tasks.dead_letter_columns import DEAD_TENANT_MAX_BYTES, DEAD_TOPIC_MAX_BYTES
from ingest_tasks.errors import StorageUnavailable
from ingest_tasks.pipeline import Accepted, Outcome, Rejected
from ingest_tasks.store import Store
from tests.support import count, execute, fresh_database, query, unique

pytestmark = pytest.mark.integration

TS = datetime(2025, 10, 7, 15, 30, tzinfo=UTC)
META = '{"fw": "1.2.3"}'


@pytest.fixture(scope="module")
def db() -> Iterator[str]:
    """A database of this module's own: some tests add triggers and take privileges away."""
    with fresh_database("traksense_refusals_") as url:
        yield url


@pytest.fixture
def store(db: str) -> Iterator[Store]:
    s = Store(db)
    yield s
    s.close()


def incompressible(n: int, seed: int = 7) -> str:
    """`n` random CJK characters (3 bytes each in UTF-8) that PostgreSQL cannot compress."""
    rng = random.Random(seed)
    return "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(n))


def telem(seq: int, tenant: str, device: str = "d", point: str = "p", v_text: str | None = None,
          unit: str | None = None, meta: str | None = META) -> Accepted:
    row = (tenant, device, point, TS, None if v_text is not None else float(seq), None, v_text, unit, meta)
    return Accepted(seq, tenant, "telem", f"traksense/{tenant}/s/{device}/telem", b'{"seq": %d}' % seq,
                    measures=(row,), device_ts=TS, received_at=1.0)


def ack(seq: int, tenant: str, cmd_id: str = "c1", payload: str = '{"ok": true}') -> Accepted:
    row = (tenant, "d", cmd_id, True, None, None, payload)
    return Accepted(seq, tenant, "ack", f"traksense/{tenant}/s/d/ack", b'{"ack": %d}' % seq, acks=(row,))


def event(seq: int, tenant: str, type_: str = "startup", data: str | None = None) -> Accepted:
    row = (tenant, "d", TS, type_, "info", data)
    return Accepted(seq, tenant, "event", f"traksense/{tenant}/s/d/event", b'{"event": %d}' % seq,
                    events=(row,), device_ts=TS)


HOSTILE: dict[str, tuple[Callable[[int, str], Accepted], str]] = {
    "point name of 3000 characters": (lambda s, t: telem(s, t, point=incompressible(3000)), "54000"),
    "device id of 3000 characters": (lambda s, t: telem(s, t, device=incompressible(3000)), "54000"),
    "cmd_id of 3000 characters": (lambda s, t: ack(s, t, cmd_id=incompressible(3000)), "54000"),
    "event type of 3000 characters": (lambda s, t: event(s, t, type_=incompressible(3000)), "54000"),
    "NUL in a text value": (lambda s, t: telem(s, t, v_text="a\x00b"), "22021"),
    "NUL in a unit": (lambda s, t: telem(s, t, unit="\x00"), "22021"),
    "meta with \\u0000": (lambda s, t: telem(s, t, meta='{"a": "\\u0000"}'), "22P05"),
    "meta nested 100000 deep": (lambda s, t: telem(s, t, meta="[" * 100_000 + "]" * 100_000), "54001"),
    "meta with a number past numeric": (lambda s, t: telem(s, t, meta='{"a": 1e1000000}'), "22003"),
    "event data that is not JSON": (lambda s, t: event(s, t, data="{"), "22P02"),
    "NUL in an ack's payload (psycopg refuses it)": (lambda s, t: ack(s, t, payload='{"a": "\x00"}'), "22000"),
    "point name that is not UTF-8": (lambda s, t: telem(s, t, point="\ud800"), "22000"),
}


def dead_letters(db: str, chunk_id: str) -> list[tuple[Any, ...]]:
    return query(db, "SELECT chunk_seq, tenant_id, topic, payload, reason, detail FROM ingest_errors "
                 "WHERE chunk_id = %s ORDER BY chunk_seq", (chunk_id,))


@pytest.mark.parametrize("case", HOSTILE)
def test_a_refused_message_is_db_rejected_and_its_neighbours_are_stored(db: str, store: Store, case: str) -> None:
    build, sqlstate = HOSTILE[case]
    left, right, hostile_tenant = unique("left-"), unique("right-"), unique("hostile-")
    hostile = build(1, hostile_tenant)
    invalid = Rejected(3, left, f"traksense/{left}/s/d/telem", b"{", "invalid_json", "not JSON")
    chunk: list[Outcome] = [telem(0, left), hostile, telem(2, right, point="q"), invalid, ack(4, right)]
    chunk_id = unique("chunk-")

    result = store.write(chunk_id, chunk)

    assert sorted(r.seq for r in result.dead) == [1, 3]
    assert count(db, "ts_measure", left) == 1
    assert count(db, "ts_measure", right) == 1
    assert count(db, "cmd_ack", right) == 1
    assert sum(count(db, table, hostile_tenant) for table in ("ts_measure", "cmd_ack", "device_event")) == 0
    rows = dead_letters(db, chunk_id)
    assert [r[:5] for r in rows] == [
        (1, hostile_tenant, hostile.topic, hostile.payload, "db_rejected"),
        (3, left, invalid.topic, b"{", "invalid_json"),
    ]
    assert f"SQLSTATE {sqlstate}" in rows[0][5]


def test_every_refused_message_of_a_large_chunk_is_found_and_the_rest_stored(db: str, store: Store) -> None:
    tenant, chunk_id = unique("many-"), unique("chunk-")
    refused_seqs = [0, 1, 57, 100, 255, 399]
    chunk: list[Outcome] = [
        telem(seq, tenant, device=incompressible(3000) if seq in refused_seqs else f"d{seq}") for seq in range(400)
    ]
    # The same command acknowledged twice, far apart: the later ack wins, as in one statement.
    chunk[10] = ack(10, tenant, payload='{"n": 1}')
    chunk[390] = ack(390, tenant, payload='{"n": 2}')

    result = store.write(chunk_id, chunk)

    assert sorted(r.seq for r in result.dead) == refused_seqs
    assert [r[0] for r in dead_letters(db, chunk_id)] == refused_seqs
    assert count(db, "ts_measure", tenant) == 400 - len(refused_seqs) - 2
    assert query(db, "SELECT payload FROM cmd_ack WHERE tenant_id = %s", (tenant,)) == [({"n": 2},)]


def test_a_tenant_too_long_for_any_index_is_db_rejected_and_still_dead_lettered(db: str, store: Store) -> None:
    neighbour, tenant = unique("n-"), incompressible(3000, seed=11)
    chunk_id = unique("chunk-")

    result = store.write(chunk_id, [telem(0, neighbour), telem(1, tenant)])

    assert [r.seq for r in result.dead] == [1]
    assert count(db, "ts_measure", neighbour) == 1
    ((seq, stored_tenant, topic, payload, reason, detail),) = dead_letters(db, chunk_id)
    assert (seq, topic, payload, reason) == (1, f"traksense/{tenant}/s/d/telem", b'{"seq": 1}', "db_rejected")
    assert stored_tenant == tenant[: DEAD_TENANT_MAX_BYTES // 3]  # 3 bytes a character
    assert "SQLSTATE 54000" in detail
    assert f"tenant_id cut from 9000 to {DEAD_TENANT_MAX_BYTES} bytes" in detail


@pytest.mark.parametrize(("tenant", "topic", "detail", "expected_tenant", "expected_topic", "notes"), [
    pytest.param(incompressible(5000), "t/x", "bad", incompressible(5000)[:341], "t/x",
                 ["tenant_id cut from 15000 to 1024 bytes"], id="tenant too long for the index"),
    pytest.param("ten\x00ant", "t/\x00/x", "bad", "ten\\x00ant", "t/\\x00/x",
                 ["NUL in tenant_id written as \\x00", "NUL in topic written as \\x00"], id="NUL in tenant and topic"),
    pytest.param("t", "t/x", "bad \x00 value", "t", "t/x", ["NUL in detail written as \\x00"], id="NUL in detail"),
    pytest.param("t\udcff", "t/\ud800", "bad", "t\\udcff", "t/\\ud800",
                 ["text in tenant_id that is not UTF-8", "text in topic that is not UTF-8"], id="not UTF-8"),
    pytest.param("t", "x" * 100_000, "bad", "t", "x" * DEAD_TOPIC_MAX_BYTES,
                 [f"topic cut from 100000 to {DEAD_TOPIC_MAX_BYTES} bytes"], id="topic past MQTT's maximum"),
    pytest.param("t", "t/x", "d" * 100_000, "t", "t/x", ["detail cut from 100000 to 8192 bytes"], id="huge detail"),
    pytest.param("", "t/x", "bad", None, "t/x", ["an empty tenant_id stored as none"], id="empty tenant"),
])
def test_a_dead_letter_is_written_whatever_its_text_with_the_payload_exact(
    db: str, store: Store, tenant: str, topic: str, detail: str, expected_tenant: str | None,
    expected_topic: str, notes: list[str],
) -> None:
    payload = bytes(range(256)) * 3
    chunk_id = unique("chunk-")

    store.dead_letter(chunk_id, [Rejected(0, tenant, topic, payload, "retries_exhausted", detail)])

    ((seq, stored_tenant, stored_topic, stored_payload, reason, stored_detail),) = dead_letters(db, chunk_id)
    assert (seq, stored_tenant, stored_topic, stored_payload, reason) == (
        0, expected_tenant, expected_topic, payload, "retries_exhausted")
    for note in notes:
        assert note in stored_detail


def test_a_dead_letter_of_plain_text_is_stored_unchanged(db: str, store: Store) -> None:
    tenant, chunk_id = unique("plain-"), unique("chunk-")
    topic = f"traksense/{tenant}/s/d/telem"

    store.dead_letter(chunk_id, [Rejected(0, tenant, topic, b"\x00\xff", "invalid_json", "payload is not JSON")])

    assert [r[1:] for r in dead_letters(db, chunk_id)] == [
        (tenant, topic, b"\x00\xff", "invalid_json", "payload is not JSON")]


@pytest.fixture
def refusing_trigger(db: str) -> Iterator[str]:
    """A trigger of an operator's that refuses some rows with RAISE (SQLSTATE P0001): new series of
    a marked point (ts_measure is a view; its identifiers are in ts_series)."""
    marker = unique("refuse-")
    execute(db, f"""
        CREATE FUNCTION refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.point_id = '{marker}' THEN RAISE EXCEPTION 'point % is not wanted', NEW.point_id; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_marked BEFORE INSERT ON ts_series FOR EACH ROW EXECUTE FUNCTION refuse_marked();
    """)
    yield marker
    execute(db, "DROP TRIGGER refuse_marked ON ts_series; DROP FUNCTION refuse_marked()")


def test_an_unclassified_refusal_that_some_messages_escape_is_the_refused_ones_problem(
    db: str, store: Store, refusing_trigger: str,
) -> None:
    tenant, chunk_id = unique("trig-"), unique("chunk-")

    result = store.write(chunk_id, [telem(0, tenant), telem(1, tenant, point=refusing_trigger)])

    assert [r.seq for r in result.dead] == [1]
    assert count(db, "ts_measure", tenant) == 1
    ((seq, *_, reason, detail),) = dead_letters(db, chunk_id)
    assert (seq, reason) == (1, "db_rejected")
    assert "SQLSTATE P0001" in detail and f"point {refusing_trigger} is not wanted" in detail


def test_an_unclassified_refusal_that_no_message_escapes_retries_the_chunk(
    db: str, store: Store, refusing_trigger: str,
) -> None:
    tenant, chunk_id = unique("trig-"), unique("chunk-")

    with pytest.raises(StorageUnavailable, match="every message refused, SQLSTATE P0001"):
        store.write(chunk_id, [telem(0, tenant, point=refusing_trigger), telem(1, tenant, point=refusing_trigger)])

    assert count(db, "ts_measure", tenant) == 0
    assert dead_letters(db, chunk_id) == []


def test_a_privilege_the_writer_lacks_retries_the_chunk_instead_of_dead_lettering_it(
    db: str, store: Store,
) -> None:
    tenant, chunk_id = unique("priv-"), unique("chunk-")
    execute(db, "REVOKE INSERT ON device_event FROM ingest_writer")
    try:
        with pytest.raises(StorageUnavailable, match="permission denied"):
            store.write(chunk_id, [telem(0, tenant), event(1, tenant)])
    finally:
        execute(db, "GRANT INSERT ON device_event TO ingest_writer")

    assert count(db, "ts_measure", tenant) == 0
    assert dead_letters(db, chunk_id) == []

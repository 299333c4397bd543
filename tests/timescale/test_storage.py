"""The workers' storage path on TimescaleDB: chunks of MQTT messages through the pure pipeline
and the Store, as the writer role, into a hypertable whose rows lie in several chunks; read back
as tenant_reader."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest

from ingest_tasks.envelope import Chunk, Message
from ingest_tasks.pipeline import process_chunk
from ingest_tasks.store import Store, WriteResult
from tests.support import query, unique
from tests.timescale.isolation import session_as

pytestmark = pytest.mark.integration

MAX_PAYLOAD = 65_536
WEEK1 = datetime(2025, 2, 3, 8, tzinfo=UTC)
POINTS = ("temp", "pressure", "flow")


def telem(tenant: str, week: int) -> Message:
    ts = WEEK1 + timedelta(weeks=week)
    payload = {"schema": "v1", "ts": ts.isoformat(), "meta": {"fw": "1.2.3"},
               "points": [{"name": p, "t": "float", "v": week + i / 10, "u": "C"} for i, p in enumerate(POINTS)]}
    return Message(f"traksense/{tenant}/s1/d1/telem", orjson.dumps(payload), time.time())


def others(tenant: str) -> tuple[Message, ...]:
    """An ack, an event, and a message that is not JSON (a dead letter), from `tenant`."""
    return (
        Message(f"traksense/{tenant}/s1/d1/ack", b'{"schema": "v1", "cmd_id": "c1", "ok": true}', time.time()),
        Message(f"traksense/{tenant}/s1/d1/event",
                orjson.dumps({"schema": "v1", "ts": WEEK1.isoformat(), "type": "startup"}), time.time()),
        Message(f"traksense/{tenant}/s1/d1/telem", b"\xff{not json", time.time()),
    )


def write(store: Store, chunk: Chunk) -> WriteResult:
    return store.write(chunk.id, process_chunk(chunk, MAX_PAYLOAD))


@pytest.fixture
def store(timescale_url: str) -> Iterator[Store]:
    s = Store(timescale_url)
    yield s
    s.close()


def seen_by_reader(url: str, tenant: str, table: str, columns: str) -> list[tuple[object, ...]]:
    with session_as(url, "tenant_reader", tenant) as conn:
        return conn.execute(f"SELECT {columns} FROM {table} ORDER BY 1, 2".encode()).fetchall()


def test_chunks_of_messages_weeks_apart_are_stored_once_and_read_back_by_their_tenant(
    timescale_url: str, store: Store, caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = unique("ta"), unique("tb")
    first = Chunk(unique("chunk-"), tuple(telem(t, w) for t in (a, b) for w in range(3)) + others(a))
    stored = write(store, first)
    assert stored.rows["ts_measure"] == 2 * 3 * len(POINTS)
    assert (stored.rows["cmd_ack"], stored.rows["device_event"], len(stored.dead)) == (1, 1, 1)

    with caplog.at_level(logging.INFO, logger="ingest_tasks.store"):
        assert write(store, first).rows["ts_measure"] == 0  # the same chunk redelivered
    # A chunk's duplicate key is the chunk's copy of ts_reading_key: still a redelivery, written
    # again with ON CONFLICT in one go, not message by message as if the database refused data.
    assert "some rows were already stored" in caplog.text
    assert "refused as a whole" not in caplog.text
    overlapping = Chunk(unique("chunk-"), (telem(a, 2), telem(a, 3)))  # week 2 is stored already
    assert write(store, overlapping).rows["ts_measure"] == len(POINTS)

    rows = seen_by_reader(timescale_url, a, "ts_measure", "ts, point_id, tenant_id, v_num, unit, meta")
    assert rows == [(WEEK1 + timedelta(weeks=w), p, a, w + i / 10, "C", {"fw": "1.2.3"})
                    for w in range(4) for i, p in sorted(enumerate(POINTS), key=lambda ip: ip[1])]
    (chunks,) = query(timescale_url, "SELECT count(DISTINCT r.tableoid) FROM ts_reading r JOIN ts_tenant t "
                      "ON t.tenant_no = r.tenant_no WHERE t.tenant_id = %s", (a,))
    assert chunks == (4,)  # a hypertable chunk a week
    assert seen_by_reader(timescale_url, a, "ingest_errors", "reason, payload, chunk_id") == [
        ("invalid_json", b"\xff{not json", first.id)]
    assert seen_by_reader(timescale_url, a, "cmd_ack", "cmd_id, ok") == [("c1", True)]
    assert seen_by_reader(timescale_url, a, "device_event", "type, ts") == [("startup", WEEK1)]
    assert len(seen_by_reader(timescale_url, b, "ts_measure", "ts, point_id")) == 3 * len(POINTS)


def test_the_writer_stores_into_chunks_that_give_it_no_privilege(timescale_url: str, store: Store) -> None:
    """The store writes through the hypertables only: chunks it made, and chunks made before, need no
    grant."""
    tenant = unique("tw")
    write(store, Chunk(unique("chunk-"), (telem(tenant, 10), telem(tenant, 0))))
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        granted = conn.execute(
            "SELECT c::text FROM (SELECT show_chunks('ts_reading') UNION ALL SELECT show_chunks('ts_point')) s(c) "
            "WHERE has_table_privilege('ingest_writer', c, 'SELECT, INSERT') "
            "OR has_any_column_privilege('ingest_writer', c, 'SELECT, INSERT')").fetchall()
    assert granted == []
    assert len(seen_by_reader(timescale_url, tenant, "ts_measure", "ts, point_id")) == 2 * len(POINTS)


@pytest.mark.parametrize(("table", "key"), [("ts_reading", "device_no, ts, tenant_no"),
                                            ("ts_point", "series_id, ts, tenant_no")])
def test_each_chunk_has_one_index_its_key(timescale_url: str, store: Store, table: str, key: str) -> None:
    """A stored reading costs one index insert: the hypertables and their chunks have no index on
    ts alone (migrations 0012 and 0013 do without the one create_hypertable makes)."""
    tenant = unique("ti")
    write(store, Chunk(unique("chunk-"), (telem(tenant, 0),)))
    # A second message of the same device and instant, with a point of its own: stored apart.
    other = {"schema": "v1", "ts": WEEK1.isoformat(), "points": [{"name": "extra", "t": "float", "v": 1}]}
    extra = Message(f"traksense/{tenant}/s1/d1/telem", orjson.dumps(other), time.time())
    assert write(store, Chunk(unique("chunk-"), (extra,))).rows["ts_measure"] == 1
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        indexes = conn.execute(
            "SELECT DISTINCT pg_get_indexdef(i.indexrelid) LIKE '%%(' || %s || ')', i.indisunique "
            "FROM pg_index i WHERE i.indrelid = %s::regclass "
            "OR i.indrelid IN (SELECT c FROM show_chunks(%s) c)", (key, table, table)).fetchall()
    assert indexes == [(True, True)]

"""The store writes new rows with a plain INSERT and falls back to the conflict check when a row
exists; a message's points are one reading, and a point is stored once whatever messages name it."""

from __future__ import annotations

import logging
import time
from itertools import pairwise

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest_tasks.envelope import Chunk, Message
from ingest_tasks.limits import MAX_META_BYTES, MAX_POINTS, MAX_UNIT_CHARS
from ingest_tasks.pipeline import process_chunk
from ingest_tasks.store import Store
from tests.support import count, query, unique

pytestmark = pytest.mark.integration


def chunk(tenant: str, seconds: list[int]) -> Chunk:
    """One three-point v1 message per second given, from one device."""
    messages = tuple(
        Message(f"traksense/{tenant}/s/d/telem", orjson.dumps({
            "schema": "v1", "ts": f"2025-10-07T15:30:{s:02d}Z",
            "points": [{"name": n, "t": "float", "v": s} for n in ("a", "b", "c")],
        }), time.time())
        for s in seconds
    )
    return Chunk(unique("chunk-"), messages)


def test_rows_already_stored_are_skipped_and_the_rest_of_the_chunk_is_stored(
    database_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    tenant = unique("t")
    store = Store(database_url)
    try:
        first = store.write("first", process_chunk(chunk(tenant, [1, 2]), 65_536))
        assert first.rows["ts_measure"] == 6
        with caplog.at_level(logging.INFO, logger="ingest_tasks.store"):
            overlapping = chunk(tenant, [2, 3])  # second 2 is stored already: a redelivered message
            again = store.write(overlapping.id, process_chunk(overlapping, 65_536))
        assert again.rows["ts_measure"] == 3
        assert "already stored" in caplog.text
        # While conflicts are expected, chunks are written with the check from the start.
        later = store.write("later", process_chunk(chunk(tenant, [3, 4]), 65_536))
        assert later.rows["ts_measure"] == 3
    finally:
        store.close()
    assert count(database_url, "ts_measure", tenant) == 12


# --- readings: a message's points in one row, the points of a second message of the same device
# and instant stored apart (migration 0013) ---------------------------------------------------------

NAMES = ("a", "b", "c")
MessageSpec = tuple[str, int, list[str]]  # device, second, point names (repeats allowed)


def message(tenant: str, index: int, spec: MessageSpec) -> Message:
    device, second, names = spec
    points = [{"name": n, "t": "float", "v": index * 10 + i} for i, n in enumerate(names)]
    payload = {"schema": "v1", "ts": f"2025-10-07T15:30:{second:02d}Z", "points": points, "meta": {"m": index}}
    return Message(f"traksense/{tenant}/s/{device}/telem", orjson.dumps(payload), time.time())


def first_wins(specs: list[MessageSpec]) -> dict[tuple[str, str, int], tuple[float, int]]:
    """(device, point, second) -> (value, message) as the contract wants it: one row a point and
    instant, the first message to name it (and within a message, its first value)."""
    stored: dict[tuple[str, str, int], tuple[float, int]] = {}
    for index, (device, second, names) in enumerate(specs):
        for i, name in enumerate(names):
            stored.setdefault((device, name, second), (float(index * 10 + i), index))
    return stored


@given(
    specs=st.lists(st.tuples(st.sampled_from(["d1", "d2"]), st.integers(0, 2),
                             st.lists(st.sampled_from(NAMES), min_size=1, max_size=4)), min_size=1, max_size=8),
    cuts=st.lists(st.integers(1, 7), max_size=3),
    redeliver=st.booleans(),
)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_messages_of_a_device_and_instant_in_any_chunks_store_each_point_once_first_wins(
    database_url: str, specs: list[MessageSpec], cuts: list[int], redeliver: bool,
) -> None:
    tenant = unique("t")
    messages = [message(tenant, i, spec) for i, spec in enumerate(specs)]
    bounds = sorted({0, len(messages), *(c for c in cuts if c < len(messages))})
    store = Store(database_url)
    try:
        for lo, hi in pairwise(bounds):
            part = Chunk(unique("chunk-"), tuple(messages[lo:hi]))
            store.write(part.id, process_chunk(part, 65_536))
            if redeliver:
                assert store.write(part.id, process_chunk(part, 65_536)).rows["ts_measure"] == 0
    finally:
        store.close()
    rows = query(database_url, "SELECT device_id, point_id, extract(second FROM ts)::int, v_num, meta "
                 "FROM ts_measure WHERE tenant_id = %s", (tenant,))
    assert len(rows) == len({r[:3] for r in rows})  # one row a point and instant
    assert {r[:3]: (r[3], r[4]["m"]) for r in rows} == first_wins(specs)


def test_a_reading_at_every_limit_is_stored_and_read_back_exactly_beside_a_small_one(database_url: str) -> None:
    """The largest message the limits admit is one reading of MAX_POINTS points (TOASTed: tens of
    kilobytes of arrays) with the largest meta; each type, long text, units with and without, as
    sent."""
    tenant = unique("t")
    points = []
    for i in range(MAX_POINTS):
        kind = ("float", "int", "bool", "text", "enum")[i % 5]
        value: object = {"float": i / 3, "int": i, "bool": i % 2 == 0, "text": "é" * 300 + str(i),
                         "enum": f"m{i}"}[kind]
        points.append({"name": f"p{i:04d}", "t": kind, "v": value, **({"u": "µ" * MAX_UNIT_CHARS} if i % 3 else {})})
    meta = {"k": "x" * (MAX_META_BYTES - len('{"k":""}'))}
    big = {"schema": "v1", "ts": "2025-10-07T15:30:00Z", "points": points, "meta": meta}
    small = {"schema": "v1", "ts": "2025-10-07T15:30:00Z", "points": [{"name": "a", "t": "float", "v": 1}]}
    chunk = Chunk(unique("chunk-"), (
        Message(f"traksense/{tenant}/s/big/telem", orjson.dumps(big), time.time()),
        Message(f"traksense/{tenant}/s/small/telem", orjson.dumps(small), time.time()),
    ))
    store = Store(database_url)
    try:
        assert store.write(chunk.id, process_chunk(chunk, 1 << 20)).rows["ts_measure"] == MAX_POINTS + 1
    finally:
        store.close()
    rows = query(database_url, "SELECT point_id, v_num, v_bool, v_text, unit, meta FROM ts_measure "
                 "WHERE tenant_id = %s AND device_id = 'big' ORDER BY point_id", (tenant,))
    expected = [(p["name"], float(p["v"]) if p["t"] in ("float", "int") else None,  # type: ignore[arg-type]
                 p["v"] if p["t"] == "bool" else None, p["v"] if p["t"] in ("text", "enum") else None,
                 p.get("u"), meta) for p in points]
    assert rows == expected
    assert count(database_url, "ts_measure", tenant) == MAX_POINTS + 1


def test_series_are_found_for_entries_in_any_order_of_tenants(database_url: str) -> None:
    """The worker sends ingest_series its entries sorted by tenant (each tenant's statements then
    read only its slice); interleaved, every entry still gets its own series and device."""
    a, b = unique("ta"), unique("tb")
    keys = [(a, "d1", "x"), (b, "d1", "x"), (a, "d2", "y"), (b, "d1", "y"), (a, "d1", "x")]
    tenants, devices, points = (list(column) for column in zip(*keys, strict=True))
    with psycopg.connect(database_url) as conn:
        conn.execute("SET ROLE ingest_writer")
        found = conn.execute("SELECT i, series_id, device_no FROM ingest_series(%s, %s, %s) ORDER BY i",
                             (tenants, devices, points)).fetchall()
        conn.execute("RESET ROLE")
        named = {(s, d): (t, dev, p) for s, d, t, dev, p in conn.execute(
            "SELECT s.series_id, s.device_no, s.tenant_id, s.device_id, s.point_id FROM ts_series s "
            "JOIN ts_device d ON d.device_no = s.device_no WHERE s.tenant_id IN (%s, %s)", (a, b))}
    assert [i for i, _, _ in found] == [1, 2, 3, 4, 5]
    assert [named[(series, device)] for _, series, device in found] == keys
    assert found[0][1:] == found[4][1:]

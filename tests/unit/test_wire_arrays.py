"""The arrays and readings store.py sends are byte for byte what psycopg's own binary dumpers send."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg.adapt import AdaptersMap, PyFormat, Transformer
from psycopg.types.composite import CompositeInfo, register_composite
from psycopg.types.json import Jsonb

from ingest_tasks import wire_arrays
from ingest_tasks.store import Repeats, reading

WHEN = datetime(2026, 12, 1, 16, 7, 45, 123456, tzinfo=UTC)


def psycopg_binary(values: Sequence[Any], oid: int) -> bytes:
    dumper = Transformer().get_dumper(list(values), PyFormat.BINARY)
    assert dumper.oid == oid
    return bytes(dumper.dump(list(values)) or b"")


@pytest.mark.parametrize(("encode", "values", "oid"), [
    pytest.param(wire_arrays.float8s, [1.5, None, 1.5, -0.0, float("inf")], 1022, id="float8 with null and repeats"),
    pytest.param(wire_arrays.float8s, [1.5, 1.5, -0.0, float("nan"), 2.0**-1074], 1022, id="float8 without null"),
    pytest.param(wire_arrays.texts, ["C", None, "é", "C", ""], 1009, id="text utf-8, empty, repeats"),
    pytest.param(wire_arrays.bools, [True, None, False], 1000, id="bool"),
    pytest.param(wire_arrays.timestamptzs, [WHEN, WHEN, datetime(1999, 12, 31, tzinfo=UTC)], 1185,
                 id="timestamptz before and after 2000"),
    pytest.param(wire_arrays.timestamptzs, [WHEN.astimezone(timezone(timedelta(hours=-3)))], 1185,
                 id="timestamptz in another zone"),
])
def test_an_array_is_encoded_as_psycopg_encodes_it(
    encode: Callable[[Sequence[Any]], bytes], values: list[Any], oid: int,
) -> None:
    assert encode(values) == psycopg_binary(values, oid)


@pytest.mark.parametrize(("encode", "values", "element"), [
    pytest.param(wire_arrays.int8s, [1, 2**40, None], 20, id="int8"),
    pytest.param(wire_arrays.int4s, [1, 4000], 23, id="int4"),
])
def test_integers_keep_the_width_asked_for(
    encode: Callable[[Sequence[Any]], bytes], values: list[Any], element: int,
) -> None:
    """psycopg picks the narrowest integer type that fits; the functions' arguments are fixed."""
    encoded = encode(values)
    assert encoded[8:12] == element.to_bytes(4, "big")
    width = 8 if element == 20 else 4
    assert len(encoded) == 20 + sum(4 + (0 if v is None else width) for v in values)


def test_an_array_of_nulls_keeps_its_element_type() -> None:
    """psycopg cannot tell the type of a list of None; a column of a chunk may be all NULL."""
    assert wire_arrays.float8s([None, None]) == bytes.fromhex(
        "00000001 00000001 000002bd 00000002 00000001 ffffffff ffffffff")


def test_text_that_is_not_utf8_is_refused_before_sending() -> None:
    with pytest.raises(UnicodeEncodeError):
        wire_arrays.texts(["\udcff"])


INT8 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INT4 = st.integers(min_value=-(2**31), max_value=2**31 - 1)


@given(st.lists(st.none() | INT8, max_size=50), st.lists(st.none() | INT4, max_size=50),
       st.lists(st.none() | st.floats(allow_nan=False), max_size=50))
def test_the_one_call_packing_of_fixed_width_arrays_equals_packing_element_by_element(
    int8s: list[int | None], int4s: list[int | None], float8s: list[float | None],
) -> None:
    """Without NULLs `fixed` packs the whole array in one call; with them it falls back to `encode`."""
    assert wire_arrays.int8s(int8s) == wire_arrays.encode(int8s, wire_arrays.INT8, lambda v: struct.pack(">iq", 8, v))
    assert wire_arrays.int4s(int4s) == wire_arrays.encode(int4s, wire_arrays.INT4, lambda v: struct.pack(">ii", 4, v))
    assert wire_arrays.float8s(float8s) == wire_arrays.encode(float8s, wire_arrays.FLOAT8,
                                                              lambda v: struct.pack(">id", 8, v))


# --- a chunk's readings: an array of the composite ingest_reading (migration 0013) -------------------

READING_OID, READING_ARRAY_OID = 70_001, 70_002  # any: array_recv checks them against the database's
READING_FIELDS = [("device_no", 20), ("ts", 1184), ("series", 1016), ("v_num", 1022), ("v_bool", 1000),
                  ("v_text", 1009), ("unit", 1009), ("meta", 3802)]
POINT = st.tuples(
    st.integers(1, 2**62), st.none() | st.floats(allow_nan=False), st.none() | st.booleans(),
    st.none() | st.text(st.characters(exclude_categories=["Cs"]), max_size=5),
    st.none() | st.sampled_from(["C", "kWh", "µ"]),
)


def psycopg_readings(readings: list[tuple[Any, ...]]) -> bytes:
    """The array psycopg itself dumps in binary for these rows of a composite of READING_FIELDS."""
    adapters = AdaptersMap(psycopg.adapters)
    info = CompositeInfo("ingest_reading", READING_OID, READING_ARRAY_OID,
                         field_names=[n for n, _ in READING_FIELDS], field_types=[t for _, t in READING_FIELDS])
    register_composite(info, adapters)
    transformer = Transformer(adapters)
    values = [info.python_type(*r) for r in readings]  # type: ignore[misc]
    dumper = transformer.get_dumper(values, PyFormat.BINARY)
    return bytes(dumper.dump(values) or b"")


def as_is(text: str) -> Callable[[Any], str]:
    """A JSON dumps that gives `text` whatever it is asked to dump: the worker sends meta as the text
    the pipeline made."""
    return lambda _: text


@given(st.lists(st.tuples(st.integers(1, 2**62), st.lists(POINT, min_size=1, max_size=6),
                          st.none() | st.sampled_from(['{"fw":"1.2.3"}', '{"a":[1,{"b":null}]}'])),
                min_size=1, max_size=5))
def test_readings_are_encoded_as_psycopg_encodes_the_composite(messages: list[tuple[Any, ...]]) -> None:
    """store.reading + records against psycopg's composite dumper: the same bytes, a column of
    NULLs sent as NULL, a point named twice in a message kept once (its first value)."""
    ours, theirs = [], []
    seen = Repeats()
    for device, points, meta in messages:
        rows = [("t", "d", f"p{series}", WHEN, num, flag, text, unit, meta) for series, num, flag, text, unit in points]
        ours.append(reading(rows, [(series, device) for series, *_ in points], seen))
        first: dict[int, tuple[Any, ...]] = {}
        for point in points:
            first.setdefault(point[0], point)
        columns = list(zip(*first.values(), strict=True))
        theirs.append((device, WHEN, list(columns[0]), *(list(c) if any(v is not None for v in c) else None
                                                          for c in columns[1:]),
                       None if meta is None else Jsonb(None, dumps=as_is(meta))))
    assert wire_arrays.records(READING_OID, ours) == psycopg_readings(theirs)

"""The arrays store.py sends are byte for byte what psycopg's own binary list dumper sends."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg.adapt import PyFormat, Transformer

from ingest_tasks import wire_arrays

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

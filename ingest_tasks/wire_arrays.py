"""One-dimensional arrays and records in PostgreSQL's binary wire format (what `array_recv` and
`record_recv` read).

Owns the encoding of a chunk's readings for `store.insert_readings`; knows nothing of connections.
Why not psycopg's own list dumper: it dumps element by element through a dumper object, about
0.4-0.75 µs an element, which was most of a worker's cost of sending a chunk's points. Here an
element costs a dict lookup: the pieces of equal values are encoded once (a chunk's unit, meta
and timestamps repeat across the points of a message and across messages).
Refuses nothing itself: text that is not valid UTF-8 raises UnicodeEncodeError as psycopg would,
and PostgreSQL refuses text holding NUL; both are a data error of the message that holds it.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Hashable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

BOOL, INT4, INT8, TEXT, FLOAT8, TIMESTAMPTZ, JSONB = 16, 23, 20, 25, 701, 1184, 3802  # type OIDs (pg_type)
BOOL_ARRAY, INT8_ARRAY, TEXT_ARRAY, FLOAT8_ARRAY = 1000, 1016, 1009, 1022

HEADER = struct.Struct(">iiIii")  # dimensions, has nulls, element type, length, lower bound
NULL = struct.pack(">i", -1)
LENGTH = struct.Struct(">i")
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
# An element: its length, then its value.
_BOOL = struct.Struct(">i?")
_INT4 = struct.Struct(">ii")
_INT8 = struct.Struct(">iq")
_FLOAT8 = struct.Struct(">id")
_FIELD = struct.Struct(">Ii")  # a record's field: type OID, length

V = TypeVar("V", bound=Hashable)


def encode(values: Sequence[V | None], element: int, piece: Callable[[V], bytes]) -> bytes:
    """The array of `values` whose elements are of type `element`, each non-null one `piece(v)`."""
    pieces: list[bytes] = []
    seen: dict[V, bytes] = {}
    has_null = 0
    for value in values:
        if value is None:
            pieces.append(NULL)
            has_null = 1
            continue
        encoded = seen.get(value)
        if encoded is None:
            encoded = seen[value] = piece(value)
        pieces.append(encoded)
    return HEADER.pack(1, has_null, element, len(values), 1) + b"".join(pieces)


def fixed(values: Sequence[V | None], element: int, code: str, width: int, piece: Callable[[V], bytes]) -> bytes:
    """`encode` for a fixed-width type: without NULLs, one struct.pack of the whole array.

    Why: a chunk's series ids and numbers are mostly distinct, so `encode` packs each one in
    Python; this packs them all in one C call (about 1 µs a message less for each such column).
    """
    if None in values:
        return encode(values, element, piece)
    fields: list[object] = [width] * (2 * len(values))
    fields[1::2] = values
    return _fixed_array(code, len(values)).pack(1, 0, element, len(values), 1, *fields)


@functools.lru_cache(maxsize=512)
def _fixed_array(code: str, length: int) -> struct.Struct:
    """The header and `length` elements of type `code` (a reading's arrays are a few elements
    long: packed in one call, its format parsed once)."""
    return struct.Struct(">iiIii" + ("i" + code) * length)


def bools(values: Sequence[bool | None]) -> bytes:
    return encode(values, BOOL, lambda v: _BOOL.pack(1, v))


def int4s(values: Sequence[int | None]) -> bytes:
    return fixed(values, INT4, "i", 4, lambda v: _INT4.pack(4, v))


def int8s(values: Sequence[int | None]) -> bytes:
    return fixed(values, INT8, "q", 8, lambda v: _INT8.pack(8, v))


def float8s(values: Sequence[float | None]) -> bytes:
    return fixed(values, FLOAT8, "d", 8, lambda v: _FLOAT8.pack(8, v))


def texts(values: Sequence[str | None]) -> bytes:
    return encode(values, TEXT, _text)


def _text(value: str) -> bytes:
    data = value.encode()
    return LENGTH.pack(len(data)) + data


def timestamptzs(values: Sequence[datetime | None]) -> bytes:
    """Aware datetimes, as microseconds since 2000-01-01 UTC (PostgreSQL's integer timestamps)."""
    return encode(values, TIMESTAMPTZ, lambda v: _INT8.pack(8, (v - PG_EPOCH) // MICROSECOND))


def jsonb(text: str) -> bytes:
    """JSON text as jsonb's binary form: a version byte, then the text (PostgreSQL parses it)."""
    return b"\x01" + text.encode()


def field(oid: int, data: bytes | None) -> bytes:
    """One field of a record (a composite type's value, after its count of fields): the column's
    type OID, then its value's length and bytes (-1: NULL). The OIDs must be the composite's column
    types, in order, or PostgreSQL refuses the record."""
    return _FIELD.pack(oid, -1) if data is None else _FIELD.pack(oid, len(data)) + data


def records(element: int, values: Sequence[bytes]) -> bytes:
    """The array of records `values` (each from `record`) of the composite type `element`."""
    return HEADER.pack(1, 0, element, len(values), 1) + b"".join(LENGTH.pack(len(v)) + v for v in values)

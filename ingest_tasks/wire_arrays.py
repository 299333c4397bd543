"""One-dimensional arrays in PostgreSQL's binary wire format (what `array_recv` reads).

Owns the encoding of a chunk's columns for `store.insert_points`; knows nothing of connections.
Why not psycopg's own list dumper: it dumps element by element through a dumper object, about
0.4-0.75 µs an element, which was most of a worker's cost of sending a chunk's points. Here an
element costs a dict lookup: the pieces of equal values are encoded once (a chunk's unit, meta
and timestamps repeat across the points of a message and across messages).
Refuses nothing itself: text that is not valid UTF-8 raises UnicodeEncodeError as psycopg would,
and PostgreSQL refuses text holding NUL; both are a data error of the message that holds it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

BOOL, INT4, INT8, TEXT, FLOAT8, TIMESTAMPTZ = 16, 23, 20, 25, 701, 1184  # element type OIDs (pg_type)

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
    return HEADER.pack(1, 0, element, len(values), 1) + struct.pack(">" + ("i" + code) * len(values), *fields)


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

"""A fast path for the common case: well-formed v1 telemetry bytes straight to rows, without pydantic.

msgspec decodes the payload into typed structs in C, checking each point's `v` against its `t`
(a tagged union) and the length limits of names, units and the list of points (`limits`), so
only what JSON types cannot say is left to Python: NUL, the range of integers, the timestamp,
meta's stored size and depth. It accepts only what `models.TelemetryV1` and
`pipeline.measure_rows` accept, with the same values; on anything unusual it returns None and the
caller parses and validates with pydantic, which also words the error. So it may only ever be
stricter than the models, never looser (a property test holds the two side by side). The caller
checks the `ts` window (it needs the receive time).

The nesting limit costs next to nothing here for the usual payload: it is first decoded with
unknown fields refused, so that its shape is known (the payload, its points, each point: 3 levels)
but for meta, whose depth is read from its stored text. Only a payload with unknown fields (which
msgspec skips by recursing) has its depth read first (`limits.within_nesting`), then is decoded
again with them allowed; that costs it about 3 µs more (5 points).
Why: orjson plus this check in Python cost about 13 µs per 5-point message in a worker; this
costs a few.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
import orjson

from ingest_tasks.limits import (
    MAX_META_BYTES,
    MAX_NESTING_LEVELS,
    MAX_POINT_NAME_CHARS,
    MAX_POINTS,
    MAX_UNIT_CHARS,
    within_nesting,
)
from ingest_tasks.models import parse_timestamp

# tenant, device, point, ts, v_num, v_bool, v_text, unit, meta (JSON text)
Row = tuple[str, str, str, datetime, float | None, bool | None, str | None, str | None, str | None]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_POINT_NAME_CHARS)]  # in characters
Unit = Annotated[str, msgspec.Meta(max_length=MAX_UNIT_CHARS)]


# Unknown fields refused: what these decode nests at most 3 levels (payload, points, point), meta aside.
class _Point(msgspec.Struct, tag_field="t", kw_only=True, forbid_unknown_fields=True):
    name: Name
    u: Unit | None = None


class _Float(_Point, tag="float"):
    v: float  # a JSON integer is taken too, as float, like models.check_value


class _Int(_Point, tag="int"):
    v: int


class _Bool(_Point, tag="bool"):
    v: bool


class _Enum(_Point, tag="enum"):
    v: str


class _Text(_Point, tag="text"):
    v: str


class _Telemetry(msgspec.Struct, forbid_unknown_fields=True):
    schema: str
    ts: str
    points: Annotated[list[_Float | _Int | _Bool | _Enum | _Text], msgspec.Meta(max_length=MAX_POINTS)]
    meta: dict[str, Any] | None = None


# The same shapes with unknown fields allowed (and skipped), for payloads that carry some. They are
# subclasses, so rows are built the same way, and the usual payload keeps the exact types, which
# isinstance checks fastest (a subclass costs ~40 ns more a point).
class _AnyFloat(_Float, tag="float", forbid_unknown_fields=False): ...


class _AnyInt(_Int, tag="int", forbid_unknown_fields=False): ...


class _AnyBool(_Bool, tag="bool", forbid_unknown_fields=False): ...


class _AnyEnum(_Enum, tag="enum", forbid_unknown_fields=False): ...


class _AnyText(_Text, tag="text", forbid_unknown_fields=False): ...


class _AnyTelemetry(msgspec.Struct):
    schema: str
    ts: str
    points: Annotated[list[_AnyFloat | _AnyInt | _AnyBool | _AnyEnum | _AnyText], msgspec.Meta(max_length=MAX_POINTS)]
    meta: dict[str, Any] | None = None


_known_decoder = msgspec.json.Decoder(_Telemetry)
_any_decoder = msgspec.json.Decoder(_AnyTelemetry)
# orjson, which reads the payloads pydantic sees, turns a JSON integer outside these into a float.
JSON_INT_MIN, JSON_INT_MAX = -(2**63), 2**64 - 1
_NUL = b"\\u0000"  # how orjson writes U+0000 (a text holding a backslash and u0000 matches too: stricter)


def fast_v1_rows(tenant: str, device: str, payload: bytes) -> tuple[tuple[Row, ...], datetime] | None:
    """Rows and device ts of a v1 telemetry payload, or None to let pydantic decide."""
    document = _decode(payload)
    if document is None or document.schema != "v1":
        return None
    try:
        ts = parse_timestamp(document.ts)
        meta = _meta_text(document.meta)
    except ValueError:
        return None
    rows = []
    for point in document.points:
        row = _row(tenant, device, ts, meta, point)
        if row is None:
            return None
        rows.append(row)
    return tuple(rows), ts


def _decode(payload: bytes) -> _Telemetry | _AnyTelemetry | None:
    # RecursionError: msgspec recurses into meta and stops at the interpreter's recursion limit;
    # such a payload is far past the nesting limit.
    try:
        return _known_decoder.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # not the known shape
        pass
    if not within_nesting(payload):
        return None
    try:
        return _any_decoder.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError):  # not UTF-8 JSON, or not v1 telemetry's shape
        return None


def _meta_text(meta: dict[str, Any] | None) -> str | None:
    if meta is None:
        return None
    try:
        text = orjson.dumps(meta)
    except orjson.JSONEncodeError:  # an integer past 64 bits (orjson.loads reads it as a float), depth
        raise ValueError("meta not as orjson reads it") from None
    if len(text) > MAX_META_BYTES or _NUL in text or not _meta_within_nesting(text):
        raise ValueError("meta over a limit, or holding NUL")
    return text.decode()


def _meta_within_nesting(text: bytes) -> bool:
    # meta is level 2 of the payload, so it may have one level fewer than the payload; a text
    # shorter than an opening and a closing bracket for each level cannot have more (most are).
    levels = MAX_NESTING_LEVELS - 1
    return len(text) <= 2 * levels or within_nesting(text, levels)


def _row(tenant: str, device: str, ts: datetime, meta: str | None, point: _Point) -> Row | None:
    name, unit = point.name, point.u
    if "\x00" in name or (unit is not None and "\x00" in unit):
        return None
    if isinstance(point, _Float):  # finite: msgspec refuses a number past a double's range
        return (tenant, device, name, ts, point.v, None, None, unit, meta)
    if isinstance(point, _Int):
        in_range = JSON_INT_MIN <= point.v <= JSON_INT_MAX
        return (tenant, device, name, ts, float(point.v), None, None, unit, meta) if in_range else None
    if isinstance(point, _Bool):
        return (tenant, device, name, ts, None, point.v, None, unit, meta)
    if isinstance(point, _Enum | _Text) and "\x00" not in point.v:
        return (tenant, device, name, ts, None, None, point.v, unit, meta)
    return None

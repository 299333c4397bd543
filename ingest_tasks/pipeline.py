"""Pure: a chunk in, rows and rejects out.

For each message: size check, topic, then well-formed v1 telemetry straight to rows (the msgspec
fast path, which bounds its own nesting depth), and everything else: nesting depth, JSON (orjson),
route by kind, validate, normalize vendor telemetry, build rows; and for both, what needs the
receive time or the stored text (the `ts` window, the size of `meta`/`data`). A bad message
becomes a `Rejected` with its reason and bytes; it never raises and never affects its neighbours.
That holds by construction, not by a catch-all: the depth is checked before anything recurses
(orjson.dumps, msgspec, pydantic, the NUL check), and each step that can fail raises a
`PermanentError`. No I/O here: no database, broker, clock or settings.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

import msgspec
import orjson

from ingest_tasks.adapters import normalize_vendor
from ingest_tasks.envelope import Chunk, Message
from ingest_tasks.errors import (
    InvalidJson,
    InvalidTopic,
    PayloadTooLarge,
    PermanentError,
    UnknownSchema,
    ValidationFailed,
)
from ingest_tasks.fastpath import fast_v1_rows
from ingest_tasks.limits import (
    MAX_DATA_BYTES,
    MAX_META_BYTES,
    check_stored_bytes,
    check_ts,
    json_error,
    nesting_error,
    within_nesting,
    within_ts_window,
)
from ingest_tasks.models import AckV1, EventV1, TelemetryV1, find_nul, validate
from ingest_tasks.topics import Route, parse_topic

# ts_measure: tenant, device, point, ts, v_num, v_bool, v_text, unit, meta (JSON text)
MeasureRow = tuple[str, str, str, datetime, float | None, bool | None, str | None, str | None, str | None]
# cmd_ack: tenant, device, cmd_id, ok, ts_exec, err, payload (JSON text)
AckRow = tuple[str, str, str, bool, datetime | None, str | None, str]
# device_event: tenant, device, ts, type, severity, data (JSON text)
EventRow = tuple[str, str, datetime, str, str, str | None]


# msgspec structs, not dataclasses: one per message, and a frozen dataclass costs ~1.7 µs to build.
class Accepted(msgspec.Struct, frozen=True):
    seq: int
    tenant: str
    kind: str
    topic: str
    payload: bytes
    measures: tuple[MeasureRow, ...] = ()
    acks: tuple[AckRow, ...] = ()
    events: tuple[EventRow, ...] = ()
    device_ts: datetime | None = None
    received_at: float = 0.0


class Rejected(msgspec.Struct, frozen=True):
    seq: int
    tenant: str | None
    topic: str
    payload: bytes
    reason: str
    detail: str


Outcome = Accepted | Rejected


def process_chunk(chunk: Chunk, max_payload_bytes: int) -> list[Outcome]:
    return [process_message(seq, m, max_payload_bytes) for seq, m in enumerate(chunk.messages)]


def process_message(seq: int, message: Message, max_payload_bytes: int) -> Outcome:
    route: Route | None = None
    try:
        route = parse_topic(message.topic)
    except InvalidTopic as exc:
        topic_error = exc
    try:
        if len(message.payload) > max_payload_bytes:
            raise PayloadTooLarge(
                f"payload is {len(message.payload)} bytes, over the limit of {max_payload_bytes}"
                " (INGEST_MAX_PAYLOAD_BYTES)"
            )
        if route is None:
            raise topic_error
        if route.kind == "telem":
            fast = fast_v1_rows(route.tenant, route.device, message.payload)  # which bounds its depth
            if fast is not None:
                if not within_ts_window(fast[1], message.received_at):
                    check_ts("ts", fast[1], message.received_at)  # which raises, in words
                return Accepted(seq, route.tenant, route.kind, message.topic, message.payload,
                                measures=fast[0], device_ts=fast[1], received_at=message.received_at)
        if not within_nesting(message.payload):  # before anything that recurses reads the payload
            raise nesting_error(message.payload)
        return to_accepted(seq, route, message, parse_json(message.payload))
    except PermanentError as exc:
        tenant = route.tenant if route is not None else None
        return Rejected(seq, tenant, message.topic, message.payload, exc.reason, exc.detail)


def parse_json(payload: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(json_error(exc)) from None
    if not isinstance(document, dict):
        raise ValidationFailed(f"payload: must be a JSON object, got {type(document).__name__}")
    return document


def to_accepted(seq: int, route: Route, message: Message, document: dict[str, Any]) -> Accepted:
    accepted = partial(Accepted, seq, route.tenant, route.kind, message.topic, message.payload)
    if route.kind == "telem":
        telemetry = validate(TelemetryV1, document) if document.get("schema") == "v1" else normalize_vendor(document)
        check_ts("ts", telemetry.ts, message.received_at)
        rows = measure_rows(route, telemetry)
        return accepted(measures=rows, device_ts=telemetry.ts, received_at=message.received_at)
    schema = document.get("schema", "v1")
    if schema != "v1":
        raise UnknownSchema(f'{route.kind} schema {schema!r:.40} is not supported; expected "v1"')
    if route.kind == "ack":
        ack = validate(AckV1, document)
        if ack.ts_exec is not None:
            check_ts("ts_exec", ack.ts_exec, message.received_at)
        return accepted(acks=(ack_row(route, ack, document),), received_at=message.received_at)
    event = validate(EventV1, document)
    check_ts("ts", event.ts, message.received_at)
    return accepted(events=(event_row(route, event),), device_ts=event.ts, received_at=message.received_at)


def json_text(field: str, value: dict[str, Any] | None, limit: int) -> str | None:
    """A JSON object as it is stored (compact), within `limit` bytes."""
    if value is None:
        return None
    text = _stored_json(field, value)
    check_stored_bytes(field, text, limit)
    return text.decode()


def _stored_json(field: str, value: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(value)
    # orjson writes whatever orjson.loads read; should that ever change, this message says so.
    except orjson.JSONEncodeError as exc:
        raise ValidationFailed(f"{field}: cannot be stored as JSON: {exc}") from None


def measure_rows(route: Route, telemetry: TelemetryV1) -> tuple[MeasureRow, ...]:
    meta = json_text("meta", telemetry.meta, MAX_META_BYTES)
    rows = []
    for p in telemetry.points:
        v_num = p.v if p.t in ("float", "int") else None
        v_bool = p.v if p.t == "bool" else None
        v_text = p.v if p.t in ("enum", "text") else None
        rows.append((route.tenant, route.device, p.name, telemetry.ts, v_num, v_bool, v_text, p.u, meta))
    return tuple(rows)


def ack_row(route: Route, ack: AckV1, document: dict[str, Any]) -> AckRow:
    # The whole payload is stored, unnamed fields included, so they must be storable too.
    where = find_nul(document)
    if where is not None:
        raise ValidationFailed(f"{where}: contains NUL (U+0000), which PostgreSQL cannot store")
    payload = _stored_json("payload", document).decode()
    return (route.tenant, route.device, ack.cmd_id, ack.ok, ack.ts_exec, ack.err, payload)


def event_row(route: Route, event: EventV1) -> EventRow:
    data = json_text("data", event.data, MAX_DATA_BYTES)
    return (route.tenant, route.device, event.ts, event.type, event.severity, data)

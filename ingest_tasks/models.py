"""Pydantic models of the contract's payloads: telemetry v1, command ack v1, device event v1.

Owns every per-field rule of CONTRACT.md "Payloads": timestamps with an offset, each point's `v`
matching its `t`, finite numbers, no NUL in any string that gets stored, the length limits of
identifiers and the number of points (`limits`). Unnamed fields are ignored. Refuses to know about
topics, tenants, the database, and the time a message arrived (the pipeline checks the `ts`
window and the stored size of `meta`/`data`, which need that time or the serialized text).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from ingest_tasks.errors import ValidationFailed
from ingest_tasks.limits import (
    MAX_CMD_ID_CHARS,
    MAX_EVENT_TYPE_CHARS,
    MAX_POINT_NAME_CHARS,
    MAX_POINTS,
    MAX_UNIT_CHARS,
    over_limit,
)

PointType = Literal["float", "int", "bool", "enum", "text"]
Severity = Literal["info", "warning", "critical"]
NUL_MESSAGE = "contains NUL (U+0000), which PostgreSQL cannot store"


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError(NUL_MESSAGE)
    return value


def find_nul(value: object, path: str = "") -> str | None:
    """The path of the first string (or key) holding NUL inside a JSON value, else None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            # The path goes into the DLQ detail (a text column), so the NUL itself is escaped.
            shown = key.replace("\x00", "\\u0000")
            where = f"{path}.{shown}" if path else shown
            if "\x00" in key:
                return where
            found = find_nul(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = find_nul(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _json_object(value: dict[str, Any]) -> dict[str, Any]:
    where = find_nul(value)
    if where is not None:
        raise ValueError(f"string at {where or '(key)'} {NUL_MESSAGE}")
    return value


def parse_timestamp(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO 8601 string with offset or Z, got {type(value).__name__}")
    if "\x00" in value:  # fromisoformat stops reading at a NUL and would accept the rest
        raise ValueError(NUL_MESSAGE)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{value[:40]!r} has no UTC offset; add Z or +hh:mm")
    return parsed


def _at_most(limit: int) -> AfterValidator:
    def check(value: str) -> str:
        if len(value) > limit:
            raise ValueError(over_limit(len(value), "characters", limit))
        return value

    return AfterValidator(check)


Text = Annotated[StrictStr, AfterValidator(_no_nul)]
Name = Annotated[StrictStr, Field(min_length=1), AfterValidator(_no_nul)]
PointName = Annotated[Name, _at_most(MAX_POINT_NAME_CHARS)]
Unit = Annotated[Text, _at_most(MAX_UNIT_CHARS)]
CmdId = Annotated[Name, _at_most(MAX_CMD_ID_CHARS)]
EventType = Annotated[Name, _at_most(MAX_EVENT_TYPE_CHARS)]
Timestamp = Annotated[datetime, PlainValidator(parse_timestamp)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_json_object)]


def _as_finite_double(value: object, t: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number for t={t}, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{value} is out of the range of a double") from None
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    return number


def check_value(t: str, value: object) -> float | bool | str:
    """The value as it is stored, or ValueError when it does not match its type `t`."""
    if t == "float":
        return _as_finite_double(value, t)
    if t == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a JSON integer (no fraction or exponent) for t=int, got {value!r:.40}")
        return _as_finite_double(value, t)
    if t == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false for t=bool, got {value!r:.40}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be a string for t={t}, got {type(value).__name__}")
    return _no_nul(value)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


M = TypeVar("M", bound=_Model)


class Point(_Model):
    name: PointName
    t: PointType
    v: Any
    u: Unit | None = None

    @field_validator("v")
    @classmethod
    def _v_matches_t(cls, value: object, info: ValidationInfo) -> object:
        t = info.data.get("t")
        return value if t is None else check_value(t, value)


class TelemetryV1(_Model):
    schema_: Literal["v1"] = Field(alias="schema")
    ts: Timestamp
    points: list[Point]
    meta: JsonObject | None = None

    @field_validator("points", mode="before")
    @classmethod
    def _at_most_max_points(cls, value: object) -> object:
        # Before the points are validated one by one: a long list is refused at the cost of len().
        if isinstance(value, list) and len(value) > MAX_POINTS:
            raise ValueError(over_limit(len(value), "points", MAX_POINTS))
        return value


class AckV1(_Model):
    schema_: Literal["v1"] = Field("v1", alias="schema")
    cmd_id: CmdId
    ok: StrictBool
    ts_exec: Timestamp | None = None
    err: Text | None = None


class EventV1(_Model):
    schema_: Literal["v1"] = Field("v1", alias="schema")
    ts: Timestamp
    type: EventType
    severity: Severity = "info"
    data: JsonObject | None = None


def describe(exc: ValidationError) -> str:
    """A pydantic error as words a person can act on: `field: problem; field: problem`."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(x) for x in err["loc"]) or "payload"
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)[:1000]


def validate(model: type[M], document: dict[str, Any]) -> M:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise ValidationFailed(describe(exc)) from None

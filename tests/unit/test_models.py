"""The payload models: every per-field rule of CONTRACT.md "Payloads", as ValidationFailed details."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from ingest_tasks.errors import ValidationFailed
from ingest_tasks.models import AckV1, EventV1, TelemetryV1, check_value, find_nul, validate
from tests.unit.captured import payload_document

TS = "2025-10-07T15:30:00Z"
AT = datetime(2025, 10, 7, 15, 30, tzinfo=UTC)


def telemetry(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"schema": "v1", "ts": TS, "points": [{"name": "p", "t": "float", "v": 1.5}]}
    document.update(overrides)
    return document


def with_point(**point: Any) -> dict[str, Any]:
    return telemetry(points=[point])


def ack(**overrides: Any) -> dict[str, Any]:
    return {"schema": "v1", "cmd_id": "01HQXYZ", "ok": True, **overrides}


def event(**overrides: Any) -> dict[str, Any]:
    return {"schema": "v1", "ts": TS, "type": "startup", **overrides}


def without(document: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != key}


def rejection(model: type[TelemetryV1] | type[AckV1] | type[EventV1], document: dict[str, Any]) -> str:
    with pytest.raises(ValidationFailed) as caught:
        validate(model, document)
    assert caught.value.reason == "validation_error"
    assert "\x00" not in caught.value.detail
    return caught.value.detail


# --- captured payloads ---------------------------------------------------------------------------


def test_the_contract_example_telemetry_is_valid() -> None:
    model = validate(TelemetryV1, payload_document("v1", "telem_contract_example"))
    assert model.ts == AT
    assert [(p.name, p.t, p.v, p.u) for p in model.points] == [
        ("temp_agua", "float", 7.3, "°C"),
        ("compressor_1_on", "bool", True, None),
        ("mode", "enum", "AUTO", None),
    ]
    assert model.meta == {"fw": "1.2.3"}


def test_fields_the_contract_does_not_name_are_ignored() -> None:
    model = validate(TelemetryV1, payload_document("v1", "telem_all_types"))
    assert len(model.points) == 5
    assert model.ts == datetime(2025, 10, 7, 15, 30, tzinfo=UTC)
    assert not hasattr(model, "seq")


def test_extra_fields_inside_a_point_are_ignored() -> None:
    model = validate(TelemetryV1, with_point(name="p", t="int", v=3, quality="good"))
    assert model.points[0].v == 3.0


# --- point values: `v` must match `t` -----------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "v", "stored"),
    [
        pytest.param("float", 7.3, 7.3, id="float from a fraction"),
        pytest.param("float", 7, 7.0, id="float from a JSON integer"),
        pytest.param("float", -1.5e2, -150.0, id="float with exponent"),
        pytest.param("float", 1.7976931348623157e308, 1.7976931348623157e308, id="float at max double"),
        pytest.param("int", 42, 42.0, id="int"),
        pytest.param("int", -(2**63), -9.223372036854776e18, id="int at min int64"),
        pytest.param("int", 10**30, 1e30, id="int beyond 64 bits but within a double"),
        pytest.param("bool", True, True, id="bool true"),
        pytest.param("bool", False, False, id="bool false"),
        pytest.param("enum", "AUTO", "AUTO", id="enum"),
        pytest.param("text", "filtro trocado ✓", "filtro trocado ✓", id="text unicode"),
        pytest.param("text", "", "", id="empty text"),
    ],
)
def test_a_value_matching_its_type_is_stored_as_is(t: str, v: object, stored: object) -> None:
    value = validate(TelemetryV1, with_point(name="p", t=t, v=v)).points[0].v
    assert value == stored
    assert type(value) is type(stored)


@pytest.mark.parametrize(
    ("t", "v", "problem"),
    [
        pytest.param("float", "7.3", "must be a number for t=float, got str", id="float from a string"),
        pytest.param("float", True, "must be a number for t=float, got bool", id="bool is not a float"),
        pytest.param("float", None, "must be a number for t=float, got NoneType", id="float null"),
        pytest.param("float", [1.0], "must be a number for t=float, got list", id="float list"),
        pytest.param("float", math.inf, "must be a finite number", id="float infinity"),
        pytest.param("float", -math.inf, "must be a finite number", id="float minus infinity"),
        pytest.param("float", math.nan, "must be a finite number", id="float NaN"),
        pytest.param("float", 10**400, "is out of the range of a double", id="float overflowing int"),
        pytest.param("int", 1.0, "must be a JSON integer", id="int with a fraction part"),
        pytest.param("int", 1.5, "must be a JSON integer", id="int rejects a fraction"),
        pytest.param("int", 1e3, "must be a JSON integer", id="int with an exponent"),
        pytest.param("int", True, "must be a JSON integer", id="bool is not an int"),
        pytest.param("int", "1", "must be a JSON integer", id="int from a string"),
        pytest.param("int", None, "must be a JSON integer", id="int null"),
        pytest.param("int", 10**400, "is out of the range of a double", id="int overflowing a double"),
        pytest.param("bool", 1, "must be true or false for t=bool, got 1", id="bool from 1"),
        pytest.param("bool", 0, "must be true or false for t=bool, got 0", id="bool from 0"),
        pytest.param("bool", "true", "must be true or false", id="bool from a string"),
        pytest.param("bool", None, "must be true or false", id="bool null"),
        pytest.param("enum", 1, "must be a string for t=enum, got int", id="enum from a number"),
        pytest.param("enum", True, "must be a string for t=enum, got bool", id="enum from a bool"),
        pytest.param("enum", None, "must be a string for t=enum, got NoneType", id="enum null"),
        pytest.param("text", 1.5, "must be a string for t=text, got float", id="text from a number"),
        pytest.param("text", {"a": "b"}, "must be a string for t=text, got dict", id="text from an object"),
        pytest.param("text", "a\x00b", "contains NUL", id="NUL in text"),
        pytest.param("enum", "\x00", "contains NUL", id="NUL in enum"),
    ],
)
def test_a_value_not_matching_its_type_is_a_validation_error(t: str, v: object, problem: str) -> None:
    detail = rejection(TelemetryV1, with_point(name="p", t=t, v=v))
    assert detail.startswith("points.0.v: ")
    assert problem in detail


def test_the_detail_names_the_index_of_the_bad_point() -> None:
    points = [{"name": "a", "t": "int", "v": 1}, {"name": "b", "t": "int", "v": 2.5}]
    assert rejection(TelemetryV1, telemetry(points=points)).startswith("points.1.v: must be a JSON integer")


@pytest.mark.parametrize(
    ("t", "v"),
    [
        pytest.param("float", 1, id="float"),
        pytest.param("int", 1, id="int"),
        pytest.param("bool", True, id="bool"),
        pytest.param("enum", "ON", id="enum"),
        pytest.param("text", "x", id="text"),
    ],
)
def test_check_value_accepts_what_validation_accepts(t: str, v: object) -> None:
    assert check_value(t, v) == v


# --- point name, type and unit -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "detail"),
    [
        pytest.param({"t": "float", "v": 1}, "points.0.name: Field required", id="missing name"),
        pytest.param(
            {"name": "", "t": "float", "v": 1},
            "points.0.name: String should have at least 1",
            id="empty name",
        ),
        pytest.param(
            {"name": 7, "t": "float", "v": 1},
            "points.0.name: Input should be a valid string",
            id="name not a string",
        ),
        pytest.param(
            {"name": "te\x00mp", "t": "float", "v": 1}, "points.0.name: contains NUL", id="NUL in name"
        ),
        pytest.param({"name": "p", "v": 1}, "points.0.t: Field required", id="missing t"),
        pytest.param(
            {"name": "p", "t": "double", "v": 1}, "points.0.t: Input should be 'float'", id="unknown t"
        ),
        pytest.param({"name": "p", "t": "float"}, "points.0.v: Field required", id="missing v"),
        pytest.param(
            {"name": "p", "t": "float", "v": 1, "u": 5},
            "points.0.u: Input should be a valid string",
            id="unit not a string",
        ),
        pytest.param(
            {"name": "p", "t": "float", "v": 1, "u": "°\x00C"}, "points.0.u: contains NUL", id="NUL in unit"
        ),
        pytest.param("p=1", "points.0: Input should be a valid dictionary", id="point not an object"),
    ],
)
def test_a_malformed_point_is_a_validation_error(point: object, detail: str) -> None:
    assert rejection(TelemetryV1, telemetry(points=[point])).startswith(detail)


def test_a_point_without_unit_has_none() -> None:
    assert validate(TelemetryV1, with_point(name="p", t="float", v=1, u=None)).points[0].u is None


def test_a_message_without_points_is_valid() -> None:
    assert validate(TelemetryV1, telemetry(points=[])).points == []


# --- message-level fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "detail"),
    [
        pytest.param(without(telemetry(), "ts"), "ts: Field required", id="missing ts"),
        pytest.param(without(telemetry(), "points"), "points: Field required", id="missing points"),
        pytest.param(without(telemetry(), "schema"), "schema: Field required", id="missing schema"),
        pytest.param(telemetry(schema="v2"), "schema: Input should be 'v1'", id="other schema"),
        pytest.param(
            telemetry(points={"p": 1}), "points: Input should be a valid list", id="points not a list"
        ),
        pytest.param(telemetry(points=None), "points: Input should be a valid list", id="points null"),
        pytest.param(telemetry(meta=[]), "meta: Input should be a valid dictionary", id="meta not an object"),
        pytest.param(telemetry(meta="fw=1"), "meta: Input should be a valid dictionary", id="meta a string"),
    ],
)
def test_a_malformed_telemetry_message_is_a_validation_error(document: dict[str, Any], detail: str) -> None:
    assert rejection(TelemetryV1, document).startswith(detail)


def test_every_problem_of_a_message_is_named() -> None:
    detail = rejection(TelemetryV1, {"schema": "v1", "points": [{"name": "", "t": "float", "v": "x"}]})
    assert "ts: Field required" in detail
    assert "points.0.name:" in detail
    assert "points.0.v: must be a number" in detail


@pytest.mark.parametrize(
    ("ts", "instant"),
    [
        pytest.param("2025-10-07T15:30:00Z", AT, id="Z"),
        pytest.param("2025-10-07T15:30:00+00:00", AT, id="zero offset"),
        pytest.param("2025-10-07T12:30:00-03:00", AT, id="negative offset"),
        pytest.param("2025-10-07T17:30:00+02:00", AT, id="positive offset"),
        pytest.param("2025-10-07T15:30:00.250Z", AT + timedelta(milliseconds=250), id="milliseconds"),
        pytest.param("1999-01-01T00:00:00Z", datetime(1999, 1, 1, tzinfo=UTC), id="out of order is fine"),
    ],
)
def test_a_timestamp_with_an_offset_is_accepted(ts: str, instant: datetime) -> None:
    parsed = validate(TelemetryV1, telemetry(ts=ts)).ts
    assert parsed == instant
    assert parsed.utcoffset() is not None


def test_a_timestamp_keeps_its_offset() -> None:
    parsed = validate(TelemetryV1, telemetry(ts="2025-10-07T12:30:00-03:00")).ts
    assert parsed.tzinfo == timezone(timedelta(hours=-3))


@pytest.mark.parametrize(
    ("ts", "problem"),
    [
        pytest.param("2025-10-07T15:30:00", "has no UTC offset; add Z or +hh:mm", id="without offset"),
        pytest.param("2025-10-07", "has no UTC offset", id="date only"),
        pytest.param(1759851000, "must be an ISO 8601 string with offset or Z, got int", id="epoch number"),
        pytest.param(1759851000.5, "got float", id="epoch float"),
        pytest.param(None, "got NoneType", id="null"),
        pytest.param(["2025-10-07T15:30:00Z"], "got list", id="list"),
        pytest.param("yesterday", "'yesterday' is not an ISO 8601 timestamp", id="garbage"),
        pytest.param("", "'' is not an ISO 8601 timestamp", id="empty"),
        pytest.param("2025-13-07T15:30:00Z", "is not an ISO 8601 timestamp", id="month 13"),
        pytest.param("2025-10-07T15:30:00+24:00", "is not an ISO 8601 timestamp", id="offset of a day"),
        pytest.param("2025-10-07T15:30:00\x00Z", "contains NUL", id="NUL before the offset"),
        pytest.param("2025-10-07T15:30:00Z\x00junk", "contains NUL", id="NUL then garbage"),
    ],
)
def test_a_timestamp_without_offset_or_not_a_string_is_a_validation_error(ts: object, problem: str) -> None:
    detail = rejection(TelemetryV1, telemetry(ts=ts))
    assert detail.startswith("ts: ")
    assert problem in detail


# --- NUL in strings that get stored --------------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "where"),
    [
        pytest.param({"fw": "1.2\x00"}, "meta: string at fw contains NUL", id="NUL in a meta value"),
        pytest.param({"board": {"rev": "\x00"}}, "meta: string at board.rev contains NUL", id="NUL nested"),
        pytest.param({"tags": ["a", "b\x00"]}, "meta: string at tags[1] contains NUL", id="NUL in a list"),
        pytest.param({"f\x00w": "1"}, "meta: string at f\\u0000w contains NUL", id="NUL in a key"),
        pytest.param({"a": {"\x00": 1}}, "meta: string at a.\\u0000 contains NUL", id="NUL in a nested key"),
    ],
)
def test_nul_anywhere_in_meta_is_a_validation_error(meta: dict[str, Any], where: str) -> None:
    assert rejection(TelemetryV1, telemetry(meta=meta)).startswith(where)


def test_meta_may_hold_any_json_without_nul() -> None:
    meta = {"fw": "1.2.3", "n": 1, "x": None, "deep": {"list": [1, "a", {"b": False}]}}
    assert validate(TelemetryV1, telemetry(meta=meta)).meta == meta


@pytest.mark.parametrize(
    ("value", "path"),
    [
        pytest.param("a\x00", "", id="string"),
        pytest.param({"a": [1, {"b": "\x00"}]}, "a[1].b", id="nested"),
        pytest.param(["ok", "\x00"], "[1]", id="list"),
        pytest.param({"ok": 1, "b": {"c\x00": 2}}, "b.c\\u0000", id="key"),
        pytest.param({"a": ["b", {"c": 1.5}], "d": None}, None, id="none"),
    ],
)
def test_find_nul_gives_the_path_of_the_first_nul(value: object, path: str | None) -> None:
    assert find_nul(value) == path


# --- command acknowledgements --------------------------------------------------------------------


def test_the_contract_example_ack_is_valid() -> None:
    model = validate(AckV1, payload_document("v1", "ack_ok"))
    assert (model.cmd_id, model.ok, model.ts_exec, model.err) == (
        "01HQXYZ7K2M3N4P5Q6R7S8T9V0",
        True,
        datetime(2025, 10, 7, 2, 34, 15, tzinfo=UTC),
        None,
    )


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(ack(), id="ts_exec and err absent"),
        pytest.param(ack(ts_exec=None, err=None), id="ts_exec and err null"),
        pytest.param(without(ack(), "schema"), id="schema absent"),
        pytest.param(ack(retries=3), id="extra field"),
    ],
)
def test_an_ack_needs_only_cmd_id_and_ok(document: dict[str, Any]) -> None:
    model = validate(AckV1, document)
    assert (model.cmd_id, model.ok, model.ts_exec, model.err) == ("01HQXYZ", True, None, None)


@pytest.mark.parametrize(
    ("document", "detail"),
    [
        pytest.param(without(ack(), "cmd_id"), "cmd_id: Field required", id="missing cmd_id"),
        pytest.param(ack(cmd_id=""), "cmd_id: String should have at least 1 character", id="empty cmd_id"),
        pytest.param(ack(cmd_id=None), "cmd_id: Input should be a valid string", id="null cmd_id"),
        pytest.param(ack(cmd_id=123), "cmd_id: Input should be a valid string", id="numeric cmd_id"),
        pytest.param(ack(cmd_id="01\x00"), "cmd_id: contains NUL", id="NUL in cmd_id"),
        pytest.param(without(ack(), "ok"), "ok: Field required", id="missing ok"),
        pytest.param(ack(ok="true"), "ok: Input should be a valid boolean", id="ok a string"),
        pytest.param(ack(ok=1), "ok: Input should be a valid boolean", id="ok the number 1"),
        pytest.param(ack(ok=None), "ok: Input should be a valid boolean", id="ok null"),
        pytest.param(ack(ts_exec="2025-10-07T02:34:15"), "ts_exec: ", id="ts_exec without offset"),
        pytest.param(ack(ts_exec="soon"), "ts_exec: 'soon' is not an ISO 8601", id="ts_exec garbage"),
        pytest.param(ack(ts_exec=0), "ts_exec: must be an ISO 8601 string", id="ts_exec a number"),
        pytest.param(ack(err=500), "err: Input should be a valid string", id="err a number"),
        pytest.param(ack(err="bad\x00"), "err: contains NUL", id="NUL in err"),
        pytest.param(ack(schema="v2"), "schema: Input should be 'v1'", id="other schema"),
    ],
)
def test_a_malformed_ack_is_a_validation_error(document: dict[str, Any], detail: str) -> None:
    assert rejection(AckV1, document).startswith(detail)


# --- device events -------------------------------------------------------------------------------


def test_severity_defaults_to_info() -> None:
    model = validate(EventV1, payload_document("v1", "event_no_severity"))
    assert (model.type, model.severity, model.data) == ("door_open", "info", None)


@pytest.mark.parametrize("severity", ["info", "warning", "critical"])
def test_each_contract_severity_is_accepted(severity: str) -> None:
    assert validate(EventV1, event(severity=severity)).severity == severity


def test_the_captured_alarm_keeps_its_data() -> None:
    model = validate(EventV1, payload_document("v1", "event_alarm"))
    assert model.severity == "critical"
    assert model.data == {"pressure_kpa": 2410.5, "limit_kpa": 2400, "zones": ["A", "B"]}


@pytest.mark.parametrize(
    ("document", "detail"),
    [
        pytest.param(
            event(severity="debug"),
            "severity: Input should be 'info', 'warning' or 'critical'",
            id="unknown severity",
        ),
        pytest.param(event(severity="INFO"), "severity: Input should be", id="severity is case sensitive"),
        pytest.param(event(severity=None), "severity: Input should be", id="null severity"),
        pytest.param(event(severity=1), "severity: Input should be", id="numeric severity"),
        pytest.param(without(event(), "type"), "type: Field required", id="missing type"),
        pytest.param(event(type=""), "type: String should have at least 1 character", id="empty type"),
        pytest.param(event(type="boot\x00"), "type: contains NUL", id="NUL in type"),
        pytest.param(without(event(), "ts"), "ts: Field required", id="missing ts"),
        pytest.param(event(ts="2025-10-07T02:34:15"), "ts: ", id="ts without offset"),
        pytest.param(event(data=[1]), "data: Input should be a valid dictionary", id="data not an object"),
        pytest.param(event(data={"msg": "x\x00"}), "data: string at msg contains NUL", id="NUL in data"),
    ],
)
def test_a_malformed_event_is_a_validation_error(document: dict[str, Any], detail: str) -> None:
    assert rejection(EventV1, document).startswith(detail)

"""Vendor adapters: parsec_v1 mapped exactly as CONTRACT.md says, and unclaimed payloads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ingest_tasks.adapters import ADAPTERS, normalize_vendor, parsec_v1
from ingest_tasks.errors import UnknownSchema, ValidationFailed
from ingest_tasks.models import TelemetryV1
from tests.unit.captured import payload_document

TS = "2025-10-07T15:32:00Z"
PointView = tuple[str, str, object, str | None]


def points(model: TelemetryV1) -> list[PointView]:
    return [(p.name, p.t, p.v, p.u) for p in model.points]


def parsec(**fields: Any) -> dict[str, Any]:
    return {"ts": TS, **fields}


def rejection(document: dict[str, Any]) -> str:
    with pytest.raises(ValidationFailed) as caught:
        normalize_vendor(document)
    return caught.value.detail


def test_parsec_v1_is_the_first_adapter() -> None:
    assert [a.NAME for a in ADAPTERS] == ["parsec_v1"]


@pytest.mark.parametrize(
    ("name", "expected_points", "expected_meta", "ts"),
    [
        pytest.param(
            "contract_example",
            [
                ("status", "enum", "RUN", None),
                ("fault", "bool", False, None),
                ("rssi", "float", -68.0, "dBm"),
            ],
            {"src": "parsec_v1", "fw": "1.2.3"},
            datetime(2025, 10, 7, 15, 32, tzinfo=UTC),
            id="contract example",
        ),
        pytest.param(
            "stopped_with_fault",
            [
                ("status", "enum", "STOP", None),
                ("fault", "bool", True, None),
                ("rssi", "float", -91.5, "dBm"),
            ],
            {"src": "parsec_v1"},
            datetime(2025, 10, 7, 15, 33, tzinfo=UTC),
            id="stopped with fault, no fw",
        ),
        pytest.param(
            "di1_only",
            [("status", "enum", "RUN", None)],
            {"src": "parsec_v1"},
            datetime(2025, 10, 7, 13, 34, tzinfo=UTC),
            id="di1 only, as a JSON boolean",
        ),
        pytest.param(
            "di2_only",
            [("fault", "bool", False, None)],
            {"src": "parsec_v1", "fw": "2.0.0-rc1"},
            datetime(2025, 10, 7, 15, 35, tzinfo=UTC),
            id="di2 only, extra field ignored",
        ),
    ],
)
def test_a_captured_parsec_payload_maps_to_the_contract_points(
    name: str, expected_points: list[PointView], expected_meta: dict[str, str], ts: datetime
) -> None:
    model = normalize_vendor(payload_document("parsec_v1", name))
    assert points(model) == expected_points
    assert model.meta == expected_meta
    assert model.ts == ts


@pytest.mark.parametrize(
    ("di1", "status"),
    [
        pytest.param(1, "RUN", id="1"),
        pytest.param(0, "STOP", id="0"),
        pytest.param(True, "RUN", id="true"),
        pytest.param(False, "STOP", id="false"),
    ],
)
def test_di1_becomes_status_run_or_stop(di1: object, status: str) -> None:
    assert points(normalize_vendor(parsec(di1=di1))) == [("status", "enum", status, None)]


@pytest.mark.parametrize(
    ("di2", "fault"),
    [
        pytest.param(1, True, id="1"),
        pytest.param(0, False, id="0"),
        pytest.param(True, True, id="true"),
        pytest.param(False, False, id="false"),
    ],
)
def test_di2_becomes_the_fault_bool(di2: object, fault: bool) -> None:
    assert points(normalize_vendor(parsec(di2=di2))) == [("fault", "bool", fault, None)]


@pytest.mark.parametrize("key", ["di1", "di2"])
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(2, id="2"),
        pytest.param(-1, id="-1"),
        pytest.param("1", id="string 1"),
        pytest.param(0.5, id="0.5"),
        pytest.param(1.0, id="1.0"),
        pytest.param(None, id="null"),
        pytest.param([1], id="list"),
    ],
)
def test_a_digital_input_other_than_0_or_1_is_a_validation_error(key: str, value: object) -> None:
    assert rejection(parsec(**{key: value})).startswith(f"{key}: must be 0 or 1 (or true/false), got ")


def test_rssi_is_a_float_in_dbm_only_when_present() -> None:
    assert points(normalize_vendor(parsec(di1=1, rssi=-70))) == [
        ("status", "enum", "RUN", None),
        ("rssi", "float", -70.0, "dBm"),
    ]
    assert [p.name for p in normalize_vendor(parsec(di1=1)).points] == ["status"]


@pytest.mark.parametrize(
    ("rssi", "problem"),
    [
        pytest.param("-68", "rssi: must be a number for t=float, got str", id="string"),
        pytest.param(True, "rssi: must be a number for t=float, got bool", id="bool"),
        pytest.param({"dbm": -68}, "rssi: must be a number for t=float, got dict", id="object"),
    ],
)
def test_a_non_numeric_rssi_is_a_validation_error(rssi: object, problem: str) -> None:
    assert rejection(parsec(di1=1, rssi=rssi)) == problem


@pytest.mark.parametrize(
    ("document", "detail"),
    [
        pytest.param({"di1": 1}, "ts: Field required", id="missing ts"),
        pytest.param(
            parsec(di1=1, ts="2025-10-07T15:32:00"),
            "ts: '2025-10-07T15:32:00' has no UTC offset",
            id="ts without offset",
        ),
        pytest.param(parsec(di1=1, ts=1759851120), "ts: must be an ISO 8601 string", id="ts a number"),
        pytest.param(parsec(di1=1, fw=123), "fw: must be a string, got 123", id="fw not a string"),
        pytest.param(parsec(di1=1, fw="1.2\x00"), "meta: string at fw contains NUL", id="NUL in fw"),
    ],
)
def test_a_claimed_payload_it_cannot_map_is_a_validation_error(document: dict[str, Any], detail: str) -> None:
    assert rejection(document).startswith(detail)


def test_a_schema_other_than_v1_does_not_stop_parsec_from_claiming() -> None:
    model = normalize_vendor(parsec(schema="parsec", di2=1))
    assert points(model) == [("fault", "bool", True, None)]


@pytest.mark.parametrize(
    "document",
    [
        pytest.param({}, id="empty object"),
        pytest.param({"rssi": -68, "fw": "1.2.3", "ts": TS}, id="rssi without digital inputs"),
        pytest.param({"DI1": 1, "ts": TS}, id="keys are case sensitive"),
        pytest.param({"schema": "v2", "points": [], "ts": TS}, id="unknown schema"),
        pytest.param({"data": {"di1": 1}, "ts": TS}, id="di1 nested"),
        pytest.param([{"di1": 1}], id="not an object"),
    ],
)
def test_a_payload_no_adapter_claims_is_unknown_schema(document: object) -> None:
    with pytest.raises(UnknownSchema) as caught:
        normalize_vendor(document)
    assert caught.value.reason == "unknown_schema"
    assert "parsec_v1" in caught.value.detail


@pytest.mark.parametrize(
    ("document", "claimed"),
    [
        pytest.param({"di1": 1}, True, id="di1"),
        pytest.param({"di2": None}, True, id="di2 of any value"),
        pytest.param({"rssi": -1}, False, id="rssi alone"),
        pytest.param({}, False, id="empty"),
    ],
)
def test_parsec_claims_objects_with_di1_or_di2(document: dict[str, Any], claimed: bool) -> None:
    assert parsec_v1.claims(document) is claimed

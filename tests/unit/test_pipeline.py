"""process_message / process_chunk over raw bytes: rows out of valid messages, one DLQ reason each
for invalid ones, and no message affecting another."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ingest_tasks.envelope import Chunk, Message
from ingest_tasks.pipeline import Accepted, Outcome, Rejected, process_chunk, process_message
from tests.unit.captured import payload_bytes

LIMIT = 65_536
RECEIVED_AT = 1_759_851_000.25
TELEM = "traksense/acme/plant-7/chiller-01/telem"
ACK = "traksense/acme/plant-7/chiller-01/ack"
EVENT = "traksense/acme/plant-7/chiller-01/event"
AT = datetime(2025, 10, 7, 15, 30, tzinfo=UTC)
V1_OK = b'{"schema":"v1","ts":"2025-10-07T15:30:00Z","points":[{"name":"p","t":"float","v":1.5}]}'


def run(payload: bytes, topic: str = TELEM, limit: int = LIMIT, seq: int = 0) -> Outcome:
    return process_message(seq, Message(topic, payload, RECEIVED_AT), limit)


def accepted(payload: bytes, topic: str = TELEM) -> Accepted:
    outcome = run(payload, topic)
    assert isinstance(outcome, Accepted), outcome
    return outcome


def rejected(payload: bytes, topic: str = TELEM, limit: int = LIMIT) -> Rejected:
    outcome = run(payload, topic, limit)
    assert isinstance(outcome, Rejected), outcome
    assert outcome.payload == payload
    assert "\x00" not in outcome.detail
    return outcome


def telem(**fields: Any) -> bytes:
    return orjson.dumps({"schema": "v1", "ts": "2025-10-07T15:30:00Z", **fields})


# --- rows ----------------------------------------------------------------------------------------


def test_the_contract_example_becomes_one_row_per_point() -> None:
    outcome = accepted(payload_bytes("v1", "telem_contract_example"))
    meta = '{"fw":"1.2.3"}'
    assert outcome.measures == (
        ("acme", "chiller-01", "temp_agua", AT, 7.3, None, None, "°C", meta),
        ("acme", "chiller-01", "compressor_1_on", AT, None, True, None, None, meta),
        ("acme", "chiller-01", "mode", AT, None, None, "AUTO", None, meta),
    )
    assert (outcome.acks, outcome.events) == ((), ())


@pytest.mark.parametrize(
    ("point", "columns"),
    [
        pytest.param({"t": "float", "v": 7.3, "u": "°C"}, (7.3, None, None, "°C"), id="float in v_num"),
        pytest.param({"t": "int", "v": 42}, (42.0, None, None, None), id="int in v_num"),
        pytest.param({"t": "bool", "v": False}, (None, False, None, None), id="bool in v_bool"),
        pytest.param({"t": "enum", "v": "AUTO"}, (None, None, "AUTO", None), id="enum in v_text"),
        pytest.param({"t": "text", "v": "ok", "u": "msg"}, (None, None, "ok", "msg"), id="text in v_text"),
    ],
)
def test_each_type_lands_in_its_column(point: dict[str, Any], columns: tuple[object, ...]) -> None:
    (row,) = accepted(telem(points=[{"name": "p", **point}])).measures
    assert row[4:8] == columns


def test_meta_is_stored_as_json_text_with_every_row() -> None:
    outcome = accepted(payload_bytes("v1", "telem_all_types"))
    metas = {row[8] for row in outcome.measures}
    assert len(outcome.measures) == 5
    assert metas == {'{"fw":"1.2.3","board":{"rev":2,"ok":true}}'}


def test_a_backslash_before_u0000_in_meta_is_text_not_a_nul() -> None:
    (row,) = accepted(telem(points=[{"name": "p", "t": "int", "v": 1}], meta={"path": "C:\\u0000"})).measures
    assert row[8] == '{"path":"C:\\\\u0000"}'


def test_meta_absent_is_stored_as_null() -> None:
    (row,) = accepted(payload_bytes("v1", "telem_no_meta")).measures
    assert row[8] is None
    assert row[4] == -150.0
    assert row[7] == "kPa"


def test_an_accepted_message_keeps_its_origin() -> None:
    payload = payload_bytes("v1", "telem_contract_example")
    outcome = run(payload, seq=7)
    assert isinstance(outcome, Accepted)
    assert (outcome.seq, outcome.tenant, outcome.kind, outcome.topic) == (7, "acme", "telem", TELEM)
    assert outcome.payload == payload
    assert (outcome.device_ts, outcome.received_at) == (AT, RECEIVED_AT)


def test_identifiers_come_from_the_topic_never_the_payload() -> None:
    payload = telem(points=[{"name": "p", "t": "int", "v": 1}], tenant="evil", device_id="other", device="x")
    (row,) = accepted(payload, "traksense/t1/s1/d1/telem").measures
    assert row[:2] == ("t1", "d1")


def test_parsec_telemetry_becomes_rows_with_its_meta() -> None:
    outcome = accepted(payload_bytes("parsec_v1", "contract_example"))
    at = datetime(2025, 10, 7, 15, 32, tzinfo=UTC)
    meta = '{"src":"parsec_v1","fw":"1.2.3"}'
    assert outcome.measures == (
        ("acme", "chiller-01", "status", at, None, None, "RUN", None, meta),
        ("acme", "chiller-01", "fault", at, None, False, None, None, meta),
        ("acme", "chiller-01", "rssi", at, -68.0, None, None, "dBm", meta),
    )


def test_an_ack_becomes_an_ack_row_with_its_whole_payload() -> None:
    outcome = accepted(payload_bytes("v1", "ack_ok"), ACK)
    (row,) = outcome.acks
    assert row[:6] == (
        "acme",
        "chiller-01",
        "01HQXYZ7K2M3N4P5Q6R7S8T9V0",
        True,
        datetime(2025, 10, 7, 2, 34, 15, tzinfo=UTC),
        None,
    )
    assert orjson.loads(row[6]) == orjson.loads(payload_bytes("v1", "ack_ok"))
    assert (outcome.kind, outcome.measures, outcome.events, outcome.device_ts) == ("ack", (), (), None)


def test_a_failed_ack_keeps_its_error() -> None:
    (row,) = accepted(payload_bytes("v1", "ack_failed"), ACK).acks
    assert row[3:6] == (False, None, "setpoint out of range")


def test_an_event_becomes_an_event_row() -> None:
    outcome = accepted(payload_bytes("v1", "event_alarm"), EVENT)
    at = datetime(2025, 10, 7, 1, 40, tzinfo=UTC)
    assert outcome.events == (
        (
            "acme",
            "chiller-01",
            at,
            "high_pressure",
            "critical",
            '{"pressure_kpa":2410.5,"limit_kpa":2400,"zones":["A","B"]}',
        ),
    )
    assert (outcome.kind, outcome.device_ts) == ("event", at)


def test_an_event_without_severity_or_data_is_info_with_null_data() -> None:
    (row,) = accepted(payload_bytes("v1", "event_no_severity"), EVENT).events
    assert row[3:] == ("door_open", "info", None)


def test_an_event_with_empty_data_stores_an_empty_object() -> None:
    (row,) = accepted(payload_bytes("v1", "event_startup"), EVENT).events
    assert row[5] == "{}"


# --- dead letters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "topic", "reason", "detail"),
    [
        pytest.param(b"\xff\xfe{}", TELEM, "invalid_json", "not valid UTF-8", id="invalid UTF-8"),
        pytest.param(
            b'{"schema":"v1","ts":"\xe9"}',
            TELEM,
            "invalid_json",
            "not valid UTF-8",
            id="latin-1 inside a string",
        ),
        pytest.param(
            b'{"schema":"v1","ts":"x","points":[{"name":"p","t":"float","v":NaN}]}',
            TELEM,
            "invalid_json",
            "not UTF-8 JSON",
            id="NaN token",
        ),
        pytest.param(
            b'{"schema":"v1","ts":"x","points":[{"name":"p","t":"float","v":Infinity}]}',
            TELEM,
            "invalid_json",
            "not UTF-8 JSON",
            id="Infinity token",
        ),
        pytest.param(b'{"v":-Infinity}', TELEM, "invalid_json", "not UTF-8 JSON", id="minus Infinity token"),
        pytest.param(
            V1_OK + b"garbage",
            TELEM,
            "invalid_json",
            "unexpected content after document",
            id="trailing garbage",
        ),
        pytest.param(
            V1_OK + V1_OK, TELEM, "invalid_json", "unexpected content after document", id="two documents"
        ),
        pytest.param(b"", TELEM, "invalid_json", "not UTF-8 JSON", id="empty payload"),
        pytest.param(b"\xef\xbb\xbf" + V1_OK, TELEM, "invalid_json", "BOM", id="byte order mark"),
        pytest.param(b'{"schema":"v1",', TELEM, "invalid_json", "not UTF-8 JSON", id="truncated"),
        pytest.param(b'{"v":"\\ud800"}', TELEM, "invalid_json", "surrogate", id="lone surrogate escape"),
        pytest.param(
            b'{"v":1' + b"0" * 400 + b"}", TELEM, "invalid_json", "infinity", id="number beyond a double"
        ),
        pytest.param(b"[" * 2000 + b"]" * 2000, TELEM, "validation_error", "payload: nested more than 32 levels",
                     id="nested deeper than orjson reads"),
        pytest.param(b"[" * 40 + b"]" * 39, TELEM, "validation_error", "payload: nested more than 32 levels",
                     id="too deep before it is cut short"),
        pytest.param(b"[" * 20 + b"x" + b"[" * 20, TELEM, "invalid_json", "unexpected character",
                     id="not JSON before it is too deep"),
        pytest.param(
            b"[]", TELEM, "validation_error", "payload: must be a JSON object, got list", id="array"
        ),
        pytest.param(
            b'"v1"', ACK, "validation_error", "payload: must be a JSON object, got str", id="string"
        ),
        pytest.param(
            b"null", EVENT, "validation_error", "payload: must be a JSON object, got NoneType", id="null"
        ),
        pytest.param(
            b'{"schema":"v1","points":[]}',
            TELEM,
            "validation_error",
            "ts: Field required",
            id="v1 without ts",
        ),
        pytest.param(
            telem(points=[{"name": "p", "t": "int", "v": 1.0}]),
            TELEM,
            "validation_error",
            "points.0.v: must be a JSON integer",
            id="int written 1.0",
        ),
        pytest.param(
            telem(points=[{"name": "p", "t": "int", "v": 1e3}]),
            TELEM,
            "validation_error",
            "points.0.v: must be a JSON integer",
            id="int written 1e3",
        ),
        pytest.param(
            b'{"schema":"v1","ts":"2025-10-07T15:30:00Z","points":[{"name":"p","t":"int","v":1E3}]}',
            TELEM,
            "validation_error",
            "points.0.v: must be a JSON integer",
            id="int with capital exponent",
        ),
        pytest.param(
            telem(points=[{"name": "p", "t": "bool", "v": 1}]),
            TELEM,
            "validation_error",
            "points.0.v: must be true or false",
            id="bool from 1",
        ),
        pytest.param(
            telem(points=[], meta={"k\u0000": 1}),
            TELEM,
            "validation_error",
            "meta: string at k\\u0000 contains NUL",
            id="NUL in a meta key",
        ),
        pytest.param(
            b'{"cmd_id":"c1","ok":true,"note":"a\\u0000"}',
            ACK,
            "validation_error",
            "note: contains NUL",
            id="NUL in an unnamed ack field that is stored",
        ),
        pytest.param(
            b'{"cmd_id":"","ok":true}',
            ACK,
            "validation_error",
            "cmd_id: String should have at least 1",
            id="empty cmd_id",
        ),
        pytest.param(
            b'{"ts":"2025-10-07T15:30:00Z","type":"x","severity":"fatal"}',
            EVENT,
            "validation_error",
            "severity: ",
            id="bad severity",
        ),
        pytest.param(
            b'{"di1":2,"ts":"2025-10-07T15:30:00Z"}',
            TELEM,
            "validation_error",
            "di1: must be 0 or 1",
            id="parsec di1=2",
        ),
        pytest.param(b"{}", TELEM, "unknown_schema", "parsec_v1", id="empty telemetry"),
        pytest.param(
            b'{"schema":"v2","ts":"2025-10-07T15:30:00Z","points":[]}',
            TELEM,
            "unknown_schema",
            "neither",
            id="telemetry schema v2",
        ),
        pytest.param(
            b'{"schema":"v2","cmd_id":"c1","ok":true}',
            ACK,
            "unknown_schema",
            "ack schema 'v2' is not supported",
            id="ack schema v2",
        ),
        pytest.param(
            b'{"schema":"v0","ts":"2025-10-07T15:30:00Z","type":"x"}',
            EVENT,
            "unknown_schema",
            "event schema 'v0'",
            id="event schema v0",
        ),
    ],
)
def test_an_invalid_message_is_dead_lettered_with_its_reason(
    payload: bytes, topic: str, reason: str, detail: str
) -> None:
    outcome = rejected(payload, topic)
    assert (outcome.reason, outcome.tenant, outcome.topic) == (reason, "acme", topic)
    assert detail in outcome.detail


@pytest.mark.parametrize(
    ("topic", "detail"),
    [
        pytest.param("traksense/acme/site/telem", "must have 5 levels", id="four levels"),
        pytest.param("traksense/acme/site/dev/telem/x", "must have 5 levels", id="six levels"),
        pytest.param("traksense//site/dev/telem", "tenant is empty", id="empty tenant"),
        pytest.param("traksense/acme/site//telem", "device is empty", id="empty device"),
        pytest.param("traksense/acme/site/dev/status", "kind must be one of", id="unknown kind"),
    ],
)
def test_a_message_on_a_bad_topic_is_invalid_topic_without_tenant(topic: str, detail: str) -> None:
    outcome = rejected(V1_OK, topic)
    assert (outcome.reason, outcome.tenant, outcome.topic) == ("invalid_topic", None, topic)
    assert detail in outcome.detail


def test_the_topic_is_checked_before_the_payload() -> None:
    assert rejected(b"\xff not json", "traksense/acme/site/telem").reason == "invalid_topic"


@pytest.mark.parametrize(
    ("payload", "topic", "tenant"),
    [
        pytest.param(V1_OK, TELEM, "acme", id="valid payload"),
        pytest.param(b"\xff" * 200, TELEM, "acme", id="invalid UTF-8"),
        pytest.param(b"[" * 200, TELEM, "acme", id="invalid JSON"),
        pytest.param(b"{" + b" " * 198 + b"}", TELEM, "acme", id="unknown schema"),
        pytest.param(V1_OK, "bad/topic", None, id="invalid topic"),
    ],
)
def test_size_is_checked_before_anything_else(payload: bytes, topic: str, tenant: str | None) -> None:
    outcome = rejected(payload, topic, limit=len(payload) - 1)
    assert (outcome.reason, outcome.tenant) == ("payload_too_large", tenant)
    assert f"payload is {len(payload)} bytes, over the limit of {len(payload) - 1}" in outcome.detail
    assert "INGEST_MAX_PAYLOAD_BYTES" in outcome.detail


def test_a_payload_exactly_at_the_limit_is_processed() -> None:
    assert isinstance(run(V1_OK, limit=len(V1_OK)), Accepted)


def test_a_huge_payload_is_kept_byte_exact() -> None:
    payload = bytes(range(256)) * 1024
    assert rejected(payload, limit=LIMIT).payload == payload


# --- chunks --------------------------------------------------------------------------------------


def test_one_bad_message_never_affects_the_others_of_its_chunk() -> None:
    messages = (
        Message(TELEM, payload_bytes("v1", "telem_contract_example"), RECEIVED_AT + 1),
        Message(TELEM, b"\xff\x00garbage", RECEIVED_AT + 2),
        Message(TELEM, payload_bytes("parsec_v1", "contract_example"), RECEIVED_AT + 3),
        Message(TELEM, b"x" * 1001, RECEIVED_AT + 4),
        Message("traksense/acme//chiller-01/telem", V1_OK, RECEIVED_AT + 5),
        Message(ACK, payload_bytes("v1", "ack_ok"), RECEIVED_AT + 6),
        Message(EVENT, b'{"ts":"2025-10-07T15:30:00","type":"x"}', RECEIVED_AT + 7),
        Message(EVENT, payload_bytes("v1", "event_alarm"), RECEIVED_AT + 8),
    )
    outcomes = process_chunk(Chunk("c1", messages), max_payload_bytes=1000)
    assert [o.seq for o in outcomes] == list(range(len(messages)))
    assert [o.reason if isinstance(o, Rejected) else o.kind for o in outcomes] == [
        "telem",
        "invalid_json",
        "telem",
        "payload_too_large",
        "invalid_topic",
        "ack",
        "validation_error",
        "event",
    ]
    for seq, (message, outcome) in enumerate(zip(messages, outcomes, strict=True)):
        assert outcome == process_message(seq, message, 1000)
        assert outcome.payload == message.payload


def test_a_chunk_of_valid_messages_accepts_each_in_order() -> None:
    messages = tuple(
        Message(TELEM, telem(points=[{"name": f"p{i}", "t": "int", "v": i}]), RECEIVED_AT + i) for i in range(5)
    )
    outcomes = process_chunk(Chunk("c2", messages), LIMIT)
    assert all(isinstance(o, Accepted) for o in outcomes)
    assert [o.measures[0][2] for o in outcomes if isinstance(o, Accepted)] == ["p0", "p1", "p2", "p3", "p4"]
    assert [o.received_at for o in outcomes if isinstance(o, Accepted)] == [RECEIVED_AT + i for i in range(5)]


def test_an_empty_chunk_has_no_outcomes() -> None:
    assert process_chunk(Chunk("c3", ()), LIMIT) == []

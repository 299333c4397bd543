"""Every per-message limit at its boundary (at the limit: stored; one past it: one dead letter whose
detail names the field and the limit), and the hostile messages reported in issue 11."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ingest_tasks.envelope import Chunk, Message
from ingest_tasks.errors import PermanentError
from ingest_tasks.fastpath import fast_v1_rows
from ingest_tasks.limits import (
    MAX_CMD_ID_CHARS,
    MAX_DATA_BYTES,
    MAX_EVENT_TYPE_CHARS,
    MAX_META_BYTES,
    MAX_NESTING_LEVELS,
    MAX_POINT_NAME_CHARS,
    MAX_POINTS,
    MAX_TOPIC_LEVEL_CHARS,
    MAX_UNIT_CHARS,
    within_nesting,
)
from ingest_tasks.models import TelemetryV1, validate
from ingest_tasks.pipeline import Accepted, Outcome, Rejected, measure_rows, process_chunk, process_message
from ingest_tasks.topics import Route

LIMIT = 65_536
RECEIVED_AT = 1_759_851_000.0  # 2025-10-07T15:30:00Z
TS = "2025-10-07T15:30:00Z"
TELEM, ACK, EVENT = (f"traksense/acme/plant-7/chiller-01/{kind}" for kind in ("telem", "ack", "event"))


def run(payload: bytes, topic: str = TELEM) -> Outcome:
    return process_message(0, Message(topic, payload, RECEIVED_AT), LIMIT)


def refused(payload: bytes, topic: str = TELEM) -> Rejected:
    outcome = run(payload, topic)
    assert isinstance(outcome, Rejected), outcome
    assert outcome.payload == payload
    return outcome


def arrays(levels: int) -> bytes:
    """`levels` arrays inside each other around one number."""
    return b"[" * levels + b"1" + b"]" * levels


def point(name: str = "p", **fields: Any) -> dict[str, Any]:
    return {"name": name, "t": "float", "v": 1.5, **fields}


def telem(**fields: Any) -> bytes:
    return orjson.dumps({"schema": "v1", "ts": TS, "points": [point()], **fields})


def ack(**fields: Any) -> bytes:
    return orjson.dumps({"schema": "v1", "cmd_id": "c1", "ok": True, **fields})


def event(**fields: Any) -> bytes:
    return orjson.dumps({"schema": "v1", "ts": TS, "type": "startup", **fields})


def parsec(**fields: Any) -> bytes:
    return orjson.dumps({"di1": 1, "ts": TS, **fields})


def with_raw(payload: bytes, key: str, raw: bytes) -> bytes:
    """`payload` (a JSON object) with one more field whose value is the raw JSON `raw`."""
    return payload[:-1] + b',"%s":%s}' % (key.encode(), raw)


# Each pair: the payload at the limit, the payload one past it, the kind, and the detail past it.
BOUNDARIES = [
    pytest.param(with_raw(telem(), "meta", b'{"a":%s}' % arrays(MAX_NESTING_LEVELS - 2)),
                 with_raw(telem(), "meta", b'{"a":%s}' % arrays(MAX_NESTING_LEVELS - 1)), TELEM,
                 "meta.a[0]...: nested more than 32 levels deep, over the limit of 32 levels", id="depth of meta"),
    pytest.param(with_raw(telem(), "x", arrays(MAX_NESTING_LEVELS - 1)),
                 with_raw(telem(), "x", arrays(MAX_NESTING_LEVELS)), TELEM,
                 "x[0][0]...: nested more than 32 levels", id="depth of an unknown field"),
    pytest.param(with_raw(ack(), "x", arrays(MAX_NESTING_LEVELS - 1)),
                 with_raw(ack(), "x", arrays(MAX_NESTING_LEVELS)), ACK,
                 "x[0][0]...: nested more than 32 levels", id="depth of an unknown ack field"),
    pytest.param(with_raw(event(), "data", b'{"a":%s}' % arrays(MAX_NESTING_LEVELS - 2)),
                 with_raw(event(), "data", b'{"a":%s}' % arrays(MAX_NESTING_LEVELS - 1)), EVENT,
                 "data.a[0]...: nested more than 32 levels", id="depth of event data"),
    pytest.param(with_raw(parsec(), "x", arrays(MAX_NESTING_LEVELS - 1)),
                 with_raw(parsec(), "x", arrays(MAX_NESTING_LEVELS)), TELEM,
                 "x[0][0]...: nested more than 32 levels", id="depth of a vendor payload"),
    pytest.param(telem(points=[point("n" * MAX_POINT_NAME_CHARS)]), telem(points=[point("n" * 129)]), TELEM,
                 "points.0.name: 129 characters, over the limit of 128", id="point name"),
    pytest.param(telem(points=[point("é" * MAX_POINT_NAME_CHARS)]), telem(points=[point("é" * 129)]), TELEM,
                 "points.0.name: 129 characters, over the limit of 128", id="point name in characters, not bytes"),
    pytest.param(telem(points=[point(u="u" * MAX_UNIT_CHARS)]), telem(points=[point(u="u" * 33)]), TELEM,
                 "points.0.u: 33 characters, over the limit of 32", id="unit"),
    pytest.param(telem(points=[point(f"p{i}") for i in range(MAX_POINTS)]),
                 telem(points=[point(f"p{i}") for i in range(MAX_POINTS + 1)]), TELEM,
                 "points: 1001 points, over the limit of 1000", id="points per message"),
    pytest.param(telem(meta={"fw": "x" * (MAX_META_BYTES - 9)}), telem(meta={"fw": "x" * (MAX_META_BYTES - 8)}),
                 TELEM, "meta: 2049 bytes as stored (compact JSON), over the limit of 2048", id="meta size"),
    pytest.param(telem(meta={"fw": "é" * 1019 + "x"}), telem(meta={"fw": "é" * 1020}), TELEM,
                 "meta: 2049 bytes as stored", id="meta size in bytes, not characters"),
    pytest.param(parsec(fw="x" * (MAX_META_BYTES - 27)), parsec(fw="x" * (MAX_META_BYTES - 26)), TELEM,
                 "fw: makes meta 2049 bytes as stored, over the limit of 2048", id="parsec fw in meta"),
    pytest.param(ack(cmd_id="c" * MAX_CMD_ID_CHARS), ack(cmd_id="c" * 129), ACK,
                 "cmd_id: 129 characters, over the limit of 128", id="cmd_id"),
    pytest.param(event(type="t" * MAX_EVENT_TYPE_CHARS), event(type="t" * 65), EVENT,
                 "type: 65 characters, over the limit of 64", id="event type"),
    pytest.param(event(data={"a": "x" * (MAX_DATA_BYTES - 8)}), event(data={"a": "x" * (MAX_DATA_BYTES - 7)}), EVENT,
                 "data: 16385 bytes as stored (compact JSON), over the limit of 16384", id="event data size"),
    pytest.param(telem(ts="2000-01-01T00:00:00Z"), telem(ts="1999-12-31T23:59:59.999999Z"), TELEM,
                 "ts: 1999-12-31T23:59:59.999999+00:00 is before 2000-01-01T00:00:00Z", id="earliest ts"),
    pytest.param(telem(ts="1999-12-31T21:00:00-03:00"), telem(ts="1999-12-31T20:59:59-03:00"), TELEM,
                 "ts: 1999-12-31T20:59:59-03:00 is before 2000-01-01T00:00:00Z", id="earliest ts with an offset"),
    pytest.param(telem(ts="2025-10-08T15:30:00Z"), telem(ts="2025-10-08T15:30:00.000001Z"), TELEM,
                 "ts: 2025-10-08T15:30:00.000001+00:00 is more than 24 hours after the message was received"
                 " (2025-10-07T15:30:00+00:00)", id="latest ts"),
    pytest.param(parsec(ts="2000-01-01T00:00:00Z"), parsec(ts="1970-01-01T00:00:00Z"), TELEM,
                 "ts: 1970-01-01T00:00:00+00:00 is before 2000-01-01T00:00:00Z", id="parsec ts"),
    pytest.param(event(ts="2025-10-08T15:30:00Z"), event(ts="2025-10-08T15:30:01Z"), EVENT,
                 "ts: 2025-10-08T15:30:01+00:00 is more than 24 hours after", id="event ts"),
    pytest.param(ack(ts_exec="2000-01-01T00:00:00Z"), ack(ts_exec="1970-01-01T00:00:00Z"), ACK,
                 "ts_exec: 1970-01-01T00:00:00+00:00 is before 2000-01-01T00:00:00Z", id="ack ts_exec"),
]


@pytest.mark.parametrize(("at_limit", "past_limit", "topic", "detail"), BOUNDARIES)
def test_a_message_at_a_limit_is_stored_and_one_past_it_is_a_validation_error(
    at_limit: bytes, past_limit: bytes, topic: str, detail: str
) -> None:
    assert len(at_limit) <= LIMIT and len(past_limit) <= LIMIT
    assert isinstance(run(at_limit, topic), Accepted), run(at_limit, topic)
    outcome = refused(past_limit, topic)
    assert (outcome.reason, outcome.tenant) == ("validation_error", "acme")
    assert detail in outcome.detail


def slow_rows(payload: bytes) -> Any:
    return measure_rows(Route("acme", "s", "d", "telem"), validate(TelemetryV1, orjson.loads(payload)))


@pytest.mark.parametrize(("at_limit", "past_limit"), [
    pytest.param(telem(points=[point("n" * MAX_POINT_NAME_CHARS)]), telem(points=[point("n" * 129)]), id="name"),
    pytest.param(telem(points=[point(u="u" * MAX_UNIT_CHARS)]), telem(points=[point(u="u" * 33)]), id="unit"),
    pytest.param(telem(points=[point(f"p{i}") for i in range(MAX_POINTS)]),
                 telem(points=[point(f"p{i}") for i in range(MAX_POINTS + 1)]), id="points"),
    pytest.param(telem(meta={"fw": "x" * (MAX_META_BYTES - 9)}), telem(meta={"fw": "x" * (MAX_META_BYTES - 8)}),
                 id="meta size"),
])
def test_the_fast_path_and_the_models_draw_each_limit_at_the_same_place(at_limit: bytes, past_limit: bytes) -> None:
    fast = fast_v1_rows("acme", "d", at_limit)
    assert fast is not None and fast[0] == slow_rows(at_limit)
    assert fast_v1_rows("acme", "d", past_limit) is None
    with pytest.raises(PermanentError):
        slow_rows(past_limit)


@pytest.mark.parametrize("level", ["tenant", "site", "device"])
def test_a_topic_level_past_its_limit_is_invalid_topic_without_tenant(level: str) -> None:
    def topic(chars: int) -> str:
        levels = {"tenant": "acme", "site": "s", "device": "d", level: "x" * chars}
        return f"traksense/{levels['tenant']}/{levels['site']}/{levels['device']}/telem"

    assert isinstance(run(telem(), topic(MAX_TOPIC_LEVEL_CHARS)), Accepted)
    outcome = refused(telem(), topic(MAX_TOPIC_LEVEL_CHARS + 1))
    assert (outcome.reason, outcome.tenant) == ("invalid_topic", None)
    assert outcome.detail == f"topic level {level}: 129 characters, over the limit of {MAX_TOPIC_LEVEL_CHARS}"


# --- the hostile messages of issue 11 --------------------------------------------------------------

DEEP_META = b'{"schema":"v1","ts":"2025-10-07T15:30:00Z","points":[],"meta":{"a":%s}}' % (
    b"[" * 254 + b"]" * 254)


@pytest.mark.parametrize(("payload", "topic", "detail"), [
    pytest.param(DEEP_META, TELEM, "meta.a[0]...: nested more than 32 levels", id="meta 254 arrays deep"),
    pytest.param(with_raw(telem(), "x", arrays(3000)), TELEM, "payload: nested more than 32 levels",
                 id="unknown field 3000 deep"),
    pytest.param(with_raw(telem(), "x", b'{"a":' * 600 + b"1" + b"}" * 600), TELEM,
                 "x.a.a...: nested more than 32 levels", id="unknown field 600 objects deep"),
    pytest.param(with_raw(ack(), "extra", b'{"k":%s}' % arrays(300)), ACK, "extra.k[0]...: nested more than 32",
                 id="ack with a nested extra field"),
    pytest.param(with_raw(event(), "data", b'{"a":%s}' % arrays(300)), EVENT, "data.a[0]...: nested more than 32",
                 id="event data 300 deep"),
    pytest.param(with_raw(parsec(), "fw", arrays(2000)), TELEM, "payload: nested more than 32", id="parsec 2000 deep"),
    pytest.param(telem(points=[point("n" * 3000)]), TELEM, "points.0.name: 3000 characters, over the limit of 128",
                 id="point name of 3000 characters"),
    pytest.param(ack(cmd_id="c" * 3000), ACK, "cmd_id: 3000 characters, over the limit of 128",
                 id="cmd_id of 3000 characters"),
])
def test_a_hostile_message_is_one_validation_error(payload: bytes, topic: str, detail: str) -> None:
    outcome = refused(payload, topic)
    assert (outcome.reason, outcome.tenant) == ("validation_error", "acme")
    assert detail in outcome.detail


def test_a_small_message_with_meta_254_deep_costs_only_itself_among_40_valid_messages() -> None:
    assert len(DEEP_META) < 610  # the was 607 bytes
    valid = [Message("traksense/other/s/d/telem", telem(points=[point(f"p{i}")]), RECEIVED_AT) for i in range(40)]
    messages = (*valid[:20], Message(TELEM, DEEP_META, RECEIVED_AT), *valid[20:])
    outcomes = process_chunk(Chunk("c", messages), LIMIT)
    assert [type(o).__name__ for o in outcomes] == ["Accepted"] * 20 + ["Rejected"] + ["Accepted"] * 20
    assert outcomes[20].payload == DEEP_META


@pytest.mark.parametrize("level", ["tenant", "device"])
def test_an_identifier_of_thousands_of_characters_in_the_topic_is_invalid_topic(level: str) -> None:
    topic = TELEM.replace("acme" if level == "tenant" else "chiller-01", "x" * 3000)
    outcome = refused(telem(), topic)
    assert (outcome.reason, outcome.tenant) == ("invalid_topic", None)
    assert f"topic level {level}: 3000 characters" in outcome.detail


# --- reading the depth ------------------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "within"), [
    pytest.param(b'{"a":"%s"}' % (b"[" * 100), True, id="brackets inside a string"),
    pytest.param(b'{"a":"\\"%s"}' % (b"{" * 100), True, id="brackets after an escaped quote"),
    pytest.param(b'{"a\\\\":%s}' % arrays(31), True, id="an escaped backslash before the closing quote"),
    pytest.param(b'{"a\\\\":%s}' % arrays(32), False, id="an escaped backslash, one level more"),
    pytest.param(b'[{"a":[{"b":' * 8 + b"1" + b"}]}]" * 8, True, id="32 levels of objects and arrays"),
    pytest.param(b'[{"a":[{"b":' * 8 + b"[1]" + b"}]}]" * 8, False, id="33 levels of objects and arrays"),
    pytest.param(b"[" + b"[]," * 1000 + b"[]]", True, id="wide, 2 levels"),
    pytest.param(b"[" * 33, False, id="33 unclosed"),
])
def test_the_depth_is_read_outside_strings(payload: bytes, within: bool) -> None:
    assert within_nesting(payload) is within


@pytest.mark.parametrize(("payload", "reason"), [
    pytest.param(b"[" * 20 + b"x" + b"[" * 20, "invalid_json", id="not JSON before it nests too deep"),
    pytest.param(b"[" * 40 + b"x", "validation_error", id="too deep before it stops being JSON"),
    pytest.param(b'["%s' % (b"[" * 40), "invalid_json", id="an unterminated string full of brackets"),
    # orjson says where it stopped in characters: the prefix read must be counted in characters too.
    pytest.param(b'["%s",%sx' % ("é".encode() * 40, b"[" * 40), "validation_error",
                 id="too deep just before an error, after multibyte characters"),
])
def test_a_deep_payload_that_is_not_json_is_told_by_what_comes_first(payload: bytes, reason: str) -> None:
    assert refused(payload).reason == reason


# --- the ts window and the receive time -------------------------------------------------------------


@pytest.mark.parametrize(("ts", "accepted"), [
    pytest.param("2025-10-07T15:30:00Z", True, id="a device clock far ahead of the listener's"),
    pytest.param("1999-12-31T23:59:59Z", False, id="still not before 2000"),
])
def test_a_listener_without_a_clock_keeps_only_the_earliest_bound(ts: str, accepted: bool) -> None:
    for payload in (telem(ts=ts), telem(ts=ts, meta={"p": "\\u0000"})):  # the fast path, and pydantic
        outcome = process_message(0, Message(TELEM, payload, 1.0), LIMIT)  # received in 1970
        assert isinstance(outcome, Accepted) is accepted, outcome


@pytest.mark.parametrize("received_at", [
    pytest.param(float("nan"), id="nan"),
    pytest.param(float("inf"), id="infinity"),
    pytest.param(-1e300, id="before any calendar"),
    pytest.param(1e300, id="after any calendar"),
])
def test_any_receive_time_gives_one_outcome(received_at: float) -> None:
    for payload, topic in ((telem(), TELEM), (telem(x=1), TELEM), (event(), EVENT), (ack(ts_exec=TS), ACK)):
        outcome = process_message(0, Message(topic, payload, received_at), LIMIT)
        assert isinstance(outcome, Accepted) or (outcome.reason, outcome.tenant) == ("validation_error", "acme")

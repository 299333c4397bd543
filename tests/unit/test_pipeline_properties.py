"""Properties of process_message over arbitrary input: it never raises, every message has exactly
one outcome, with a contract reason and its bytes intact, and what it stores respects every limit.

The input is arbitrary bytes, and JSON of every kind (v1 telemetry, vendor telemetry, acks,
events) with raw fragments spliced in where a value would be: nesting far past every parser's
limit, numbers past 64 bits and past a double, NaN, lone surrogates, NUL, invalid UTF-8.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest_tasks import limits
from ingest_tasks.envelope import Chunk, Message
from ingest_tasks.errors import REASONS, InvalidTopic
from ingest_tasks.pipeline import Accepted, Outcome, Rejected, process_chunk, process_message
from ingest_tasks.topics import parse_topic

LIMIT = 65_536
RECEIVED_AT = 1_759_851_000.0  # 2025-10-07T15:30:00Z
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

KINDS = ["telem", "ack", "event"]
KEYS = ["schema", "ts", "points", "meta", "name", "t", "v", "u", "cmd_id", "ok", "ts_exec", "err", "type",
        "severity", "data", "di1", "di2", "rssi", "fw"]
MARK = "\ue000raw"  # a value in a document that is replaced by a raw JSON fragment once encoded

# --- strings, levels and topics ---------------------------------------------------------------------


def around(limit: int) -> st.SearchStrategy[int]:
    return st.integers(limit - 2, limit + 2)


def text_around(limit: int) -> st.SearchStrategy[str]:
    """Strings a few characters either side of a limit, some multibyte."""
    return st.builds(lambda n, c: c * n, around(limit), st.sampled_from(["a", "é", "\U0001f600"]))


odd_text = st.one_of(
    st.text(max_size=12),  # any code point but surrogates: combining marks, U+FEFF, U+2028, emoji ...
    st.sampled_from(["", "\x00", "a\x00b", "[[[[", '"', "\\", "\\u0000"]),
)
surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2)
levels = st.one_of(
    st.sampled_from(["acme", "t1", "s1", "d1", ""]),
    st.text(min_size=1, max_size=6),
    text_around(limits.MAX_TOPIC_LEVEL_CHARS),
    st.integers(1000, 3000).map(lambda n: "x" * n),
)
topics = st.one_of(
    st.builds("traksense/{}/{}/{}/{}".format, levels, levels, levels, st.sampled_from(KINDS)),
    st.builds("/".join, st.lists(st.sampled_from(["traksense", "t1", "", "telem", "ack", "x\x00"]), max_size=7)),
    st.text(max_size=40),
)

# --- JSON values and raw fragments ----------------------------------------------------------------


def arrays(n: int) -> bytes:
    return b"[" * n + b"1" + b"]" * n


def objects(n: int) -> bytes:
    return b'{"k":' * n + b"{}" + b"}" * n


raw_fragments = st.one_of(
    st.integers(0, 1500).map(arrays),  # valid JSON, deep past the limit, orjson's and msgspec's
    st.integers(25, 40).map(arrays),  # ... and around the limit
    st.integers(0, 800).map(objects),
    st.integers(1, 400).map(lambda n: b"-1" + b"0" * n),  # past 64 bits, past a double
    st.sampled_from([b"1e999", b"-1e999", b"1e-999", b"-0", b"18446744073709551616", b"-9223372036854775809",
                     b"NaN", b"Infinity", b'"\\ud800"', b'"\\udc00x"', b'"\\u0000"', b'"\xff"', b'"\xed\xa0\x80"',
                     b'"\\"[[[["', b"[" * 40, b"]", b'"\xc3\xa9' + b"[" * 40 + b'"']),
    st.binary(max_size=8),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    odd_text,
    surrogates,
    st.sampled_from(["v1", "float", "int", "bool", "enum", "text", "info", "critical", 0, 1, 2, MARK]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=5),
    ),
    max_leaves=12,
)
# Where a value may be anything: often a raw fragment, so that it reaches what reads it.
anything = st.one_of(st.just(MARK), json_values)


@st.composite
def mostly(draw: st.DrawFn, usual: st.SearchStrategy[Any], unusual: st.SearchStrategy[Any]) -> Any:
    """Three in four from `usual`: one_of would flatten nested branches and draw mostly the odd."""
    return draw(usual if draw(st.integers(0, 3)) else unusual)


json_objects = st.dictionaries(st.text(max_size=6), anything, max_size=4)
edge_ts = [datetime(2000, 1, 1, tzinfo=UTC), datetime.fromtimestamp(RECEIVED_AT + 86_400, UTC)]
good_ts = st.one_of(
    st.just("2025-10-07T15:30:00Z"),
    st.builds(lambda edge, us: (edge + timedelta(microseconds=us)).isoformat(),
              st.sampled_from(edge_ts), st.integers(-2, 2)),
)
timestamps = mostly(good_ts, st.one_of(
    st.sampled_from(["2025-10-07T15:30:00", "1970-01-01T00:00:00Z", "0001-01-01T00:00:00+23:59", "garbage"]),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    anything,
))
names = mostly(st.one_of(st.text(min_size=1, max_size=8), text_around(limits.MAX_POINT_NAME_CHARS)), anything)
TYPED = {"float": st.floats(allow_nan=False, allow_infinity=False), "int": st.integers(-(2**64), 2**64),
         "bool": st.booleans(), "enum": odd_text, "text": odd_text}


@st.composite
def points(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-typed points; some with any value, name or unit, or extra fields."""
    t = draw(st.sampled_from(list(TYPED)))
    point = {"name": draw(names), "t": t, "v": draw(mostly(TYPED[t], anything))}
    extra = draw(st.fixed_dictionaries({}, optional={
        "u": mostly(st.one_of(st.none(), st.text(max_size=4), text_around(limits.MAX_UNIT_CHARS)), anything),
        "x": anything, "t": anything}))
    return {**point, **extra}


point_lists = st.one_of(
    st.lists(points(), max_size=3),
    st.builds(lambda n: [{"name": "p", "t": "int", "v": 1}] * n, around(limits.MAX_POINTS)),
    anything,
)


def sized(limit: int) -> st.SearchStrategy[dict[str, str]]:
    """Objects of `limit` bytes as stored, give or take two."""
    return st.builds(lambda n: {"fw": "x" * (limit - 9 + n)}, st.integers(-2, 2))


telemetry = st.fixed_dictionaries(
    {"schema": st.just("v1"), "ts": timestamps, "points": point_lists},
    optional={"meta": st.one_of(json_objects, sized(limits.MAX_META_BYTES), anything), "x": anything},
)
vendor = st.fixed_dictionaries(  # parsec_v1
    {"ts": timestamps, "di1": mostly(st.sampled_from([0, 1, True]), anything)},
    optional={"di2": st.sampled_from([0, 1, False]),
              "rssi": mostly(st.floats(allow_nan=False), anything), "x": anything,
              "fw": mostly(st.one_of(odd_text, text_around(limits.MAX_META_BYTES - 27)), anything)},
)
acks = st.fixed_dictionaries(
    {"cmd_id": mostly(st.one_of(st.text(min_size=1, max_size=8), text_around(limits.MAX_CMD_ID_CHARS)), anything),
     "ok": mostly(st.booleans(), anything)},
    optional={"schema": st.sampled_from(["v1", "v2"]), "ts_exec": st.one_of(st.none(), timestamps),
              "err": mostly(st.one_of(st.none(), odd_text), anything), "extra": anything},
)
events = st.fixed_dictionaries(
    {"ts": timestamps,
     "type": mostly(st.one_of(st.text(min_size=1, max_size=8), text_around(limits.MAX_EVENT_TYPE_CHARS)), anything)},
    optional={"schema": st.sampled_from(["v1", "v0"]), "severity": st.sampled_from(["info", "critical", "fatal"]),
              "x": anything, "data": st.one_of(json_objects, sized(limits.MAX_DATA_BYTES), anything)},
)
documents = st.one_of(json_values, st.dictionaries(st.sampled_from(KEYS), anything, max_size=8),
                      telemetry, vendor, acks, events)
OF_KIND = {"telem": st.one_of(telemetry, vendor), "ack": acks, "event": events}


@st.composite
def payloads(draw: st.DrawFn, kind: str | None = None) -> bytes:
    """A document (of `kind`, mostly, when given) encoded as JSON (ASCII or raw UTF-8), with each
    MARK replaced by a raw fragment."""
    ascii_only = draw(st.booleans())
    document = draw(documents if kind is None else mostly(OF_KIND[kind], documents))
    encoded = json.dumps(document, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    mark = json.dumps(MARK, ensure_ascii=ascii_only).encode()
    pieces = encoded.split(mark)
    return b"".join(piece if i == 0 else draw(raw_fragments) + piece for i, piece in enumerate(pieces))


# --- what every outcome must be ------------------------------------------------------------------


def tenant_of(topic: str) -> str | None:
    try:
        return parse_topic(topic).tenant
    except InvalidTopic:
        return None


def depth(value: object) -> int:
    """Levels of containers in a parsed JSON value, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def stored_json_within(text: str | None, max_bytes: int, max_levels: int) -> bool:
    return text is None or (len(text.encode()) <= max_bytes and depth(orjson.loads(text)) <= max_levels)


def in_window(ts: datetime | None, received_at: float) -> bool:
    return ts is None or limits.TS_EARLIEST <= ts <= datetime.fromtimestamp(received_at + 86_400, UTC)


def assert_within_limits(outcome: Accepted, received_at: float) -> None:
    route = parse_topic(outcome.topic)
    assert all(0 < len(level) <= limits.MAX_TOPIC_LEVEL_CHARS for level in (route.tenant, route.site, route.device))
    assert len(outcome.measures) <= limits.MAX_POINTS
    for _t, _d, name, ts, _n, _b, _x, unit, meta in outcome.measures:
        assert 0 < len(name) <= limits.MAX_POINT_NAME_CHARS
        assert unit is None or len(unit) <= limits.MAX_UNIT_CHARS
        assert stored_json_within(meta, limits.MAX_META_BYTES, limits.MAX_NESTING_LEVELS - 1)  # meta is level 2
        assert in_window(ts, received_at)
    for _t, _d, cmd_id, _ok, ts_exec, _err, payload in outcome.acks:
        assert 0 < len(cmd_id) <= limits.MAX_CMD_ID_CHARS
        assert in_window(ts_exec, received_at)
        assert stored_json_within(payload, LIMIT, limits.MAX_NESTING_LEVELS)
    for _t, _d, ts, type_, _severity, data in outcome.events:
        assert 0 < len(type_) <= limits.MAX_EVENT_TYPE_CHARS
        assert in_window(ts, received_at)
        assert stored_json_within(data, limits.MAX_DATA_BYTES, limits.MAX_NESTING_LEVELS - 1)


def check(outcome: Outcome, seq: int, message: Message) -> None:
    """The one outcome of a message: from this message, with a contract reason or with rows."""
    assert isinstance(outcome, Accepted | Rejected)
    assert (outcome.seq, outcome.topic, outcome.payload) == (seq, message.topic, message.payload)
    assert outcome.tenant == tenant_of(message.topic)
    if isinstance(outcome, Rejected):
        assert outcome.reason in REASONS
        assert outcome.detail.strip()
        assert "\x00" not in outcome.detail  # the detail is stored in a text column
        outcome.detail.encode()  # ... as UTF-8: no lone surrogate either
        if outcome.tenant is None:
            assert outcome.reason in ("invalid_topic", "payload_too_large")
    else:
        assert outcome.topic.endswith("/" + outcome.kind)
        assert (len(outcome.acks), len(outcome.events)) == (outcome.kind == "ack", outcome.kind == "event")
        assert outcome.kind == "telem" or not outcome.measures
        assert_within_limits(outcome, message.received_at)


# --- the properties ------------------------------------------------------------------------------


@SETTINGS
@given(topic=topics, payload=st.binary(max_size=LIMIT + 64) | payloads(), seq=st.integers(0, 10_000))
def test_arbitrary_bytes_give_exactly_one_outcome(topic: str, payload: bytes, seq: int) -> None:
    message = Message(topic, payload, RECEIVED_AT)
    check(process_message(seq, message, LIMIT), seq, message)


@settings(SETTINGS, max_examples=400)
@given(st.data(), st.sampled_from(KINDS))
def test_arbitrary_json_of_each_kind_gives_exactly_one_outcome(data: st.DataObject, kind: str) -> None:
    message = Message(f"traksense/acme/s1/d1/{kind}", data.draw(payloads(kind)), RECEIVED_AT)
    check(process_message(0, message, LIMIT), 0, message)


@settings(SETTINGS, max_examples=40)
@given(st.lists(st.tuples(topics, payloads()), max_size=8))
def test_each_message_of_a_chunk_has_the_outcome_it_has_alone(items: list[tuple[str, bytes]]) -> None:
    messages = tuple(Message(topic, payload, RECEIVED_AT + i) for i, (topic, payload) in enumerate(items))
    outcomes = process_chunk(Chunk("c", messages), LIMIT)
    assert outcomes == [process_message(seq, m, LIMIT) for seq, m in enumerate(messages)]


@st.composite
def nested(draw: st.DrawFn) -> Any:
    """A JSON value around the nesting limit, with strings full of brackets, quotes and escapes."""
    tricky = st.text(st.sampled_from('[]{}"\\ aé'), max_size=6)
    value: Any = draw(st.one_of(tricky, st.integers(), st.just([]), st.just({})))
    for _ in range(draw(st.integers(limits.MAX_NESTING_LEVELS - 4, limits.MAX_NESTING_LEVELS + 3))):
        sibling = draw(st.one_of(tricky, st.lists(tricky, max_size=2), st.dictionaries(tricky, tricky, max_size=2)))
        value = draw(st.sampled_from([[value], [sibling, value], {draw(tricky): value, "s": sibling}]))
    return value


@settings(SETTINGS, max_examples=200)
@given(nested(), st.booleans())
def test_the_nesting_limit_is_read_exactly(document: Any, ascii_only: bool) -> None:
    payload = json.dumps(document, ensure_ascii=ascii_only).encode()
    assert limits.within_nesting(payload) == (depth(document) <= limits.MAX_NESTING_LEVELS)


@settings(SETTINGS, max_examples=100)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "name": st.text(min_size=1, max_size=10).filter(lambda s: "\x00" not in s),
                "t": st.just("float"),
                "v": st.floats(allow_nan=False, allow_infinity=False),
            }
        ),
        max_size=5,
    )
)
def test_valid_v1_telemetry_is_accepted_with_one_row_per_point(generated: list[dict[str, Any]]) -> None:
    document = {"schema": "v1", "ts": "2025-10-07T15:30:00Z", "points": generated}
    payload = json.dumps(document, ensure_ascii=False).encode()
    outcome = process_message(0, Message("traksense/t1/s1/d1/telem", payload, RECEIVED_AT), LIMIT)
    assert isinstance(outcome, Accepted), outcome
    assert [(row[2], row[4]) for row in outcome.measures] == [(p["name"], p["v"]) for p in generated]

"""Properties of process_message over arbitrary input: it never raises, and every message has
exactly one outcome, with a contract reason and its bytes intact."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest_tasks.envelope import Chunk, Message
from ingest_tasks.errors import REASONS, InvalidTopic
from ingest_tasks.pipeline import Accepted, Outcome, Rejected, process_chunk, process_message
from ingest_tasks.topics import parse_topic

LIMIT = 4096
TELEM_KEYS = ["schema", "ts", "points", "meta", "name", "t", "v", "u"]
ACK_EVENT_KEYS = ["cmd_id", "ok", "ts_exec", "err", "type", "severity", "data"]
PARSEC_KEYS = ["di1", "di2", "rssi", "fw"]
KEYS = TELEM_KEYS + ACK_EVENT_KEYS + PARSEC_KEYS
CONTRACT_WORDS = ["v1", "float", "int", "bool", "enum", "text", "info", "critical"]
TIMESTAMPS = ["2025-10-07T15:30:00Z", "2025-10-07T15:30:00", "2025-10-07T12:30:00-03:00"]

topics = st.one_of(
    st.sampled_from(["traksense/t1/s1/d1/telem", "traksense/t1/s1/d1/ack", "traksense/t1/s1/d1/event"]),
    st.builds(
        "/".join, st.lists(st.sampled_from(["traksense", "t1", "", "telem", "ack", "x\x00"]), max_size=7)
    ),
    st.text(max_size=40),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from([*CONTRACT_WORDS, *TIMESTAMPS, "a\x00b", 0, 1, 2]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=5),
    ),
    max_leaves=20,
)
points = st.fixed_dictionaries(
    {
        "name": st.one_of(st.text(max_size=8), scalars),
        "t": st.one_of(st.sampled_from(["float", "int", "bool", "enum", "text"]), scalars),
        "v": json_values,
    },
    optional={"u": st.one_of(st.none(), st.text(max_size=4), scalars)},
)
documents = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8),
    st.fixed_dictionaries(
        {"schema": st.just("v1"), "ts": scalars, "points": st.lists(points, max_size=3)},
        optional={"meta": json_values},
    ),
)


def encode(document: Any, ascii_only: bool) -> bytes:
    return json.dumps(document, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def tenant_of(topic: str) -> str | None:
    try:
        return parse_topic(topic).tenant
    except InvalidTopic:
        return None


def check(outcome: Outcome, seq: int, message: Message) -> None:
    """The one outcome of a message: from this message, with a contract reason or with rows."""
    assert isinstance(outcome, Accepted | Rejected)
    assert (outcome.seq, outcome.topic, outcome.payload) == (seq, message.topic, message.payload)
    assert outcome.tenant == tenant_of(message.topic)
    if isinstance(outcome, Rejected):
        assert outcome.reason in REASONS
        assert outcome.detail
        assert "\x00" not in outcome.detail  # the detail is stored in a text column
        if outcome.tenant is None:
            assert outcome.reason in ("invalid_topic", "payload_too_large")
    else:
        assert outcome.topic.endswith("/" + outcome.kind)
        assert (len(outcome.acks), len(outcome.events)) == (outcome.kind == "ack", outcome.kind == "event")
        assert outcome.kind == "telem" or not outcome.measures


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=topics, payload=st.binary(max_size=LIMIT + 64), seq=st.integers(0, 10_000))
def test_arbitrary_bytes_give_exactly_one_outcome(topic: str, payload: bytes, seq: int) -> None:
    message = Message(topic, payload, 0.0)
    check(process_message(seq, message, LIMIT), seq, message)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=topics, document=documents, ascii_only=st.booleans())
def test_arbitrary_json_documents_give_exactly_one_outcome(
    topic: str, document: Any, ascii_only: bool
) -> None:
    message = Message(topic, encode(document, ascii_only), 0.0)
    check(process_message(0, message, LIMIT), 0, message)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(topics, documents), max_size=8))
def test_each_message_of_a_chunk_has_the_outcome_it_has_alone(items: list[tuple[str, Any]]) -> None:
    messages = tuple(Message(topic, encode(doc, True), float(i)) for i, (topic, doc) in enumerate(items))
    outcomes = process_chunk(Chunk("c", messages), LIMIT)
    assert outcomes == [process_message(seq, m, LIMIT) for seq, m in enumerate(messages)]


@settings(max_examples=100, deadline=None)
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
    outcome = process_message(0, Message("traksense/t1/s1/d1/telem", encode(document, False), 0.0), LIMIT)
    assert isinstance(outcome, Accepted), outcome
    assert [(row[2], row[4]) for row in outcome.measures] == [(p["name"], p["v"]) for p in generated]

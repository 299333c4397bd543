"""One hostile message among valid ones of other tenants costs only itself, end to end.

Mosquitto -> listener -> Redis -> worker -> PostgreSQL, all real. Each round publishes one message
drawn from a family of hostile shapes (deep nesting, identifiers long enough for PostgreSQL to
refuse them as keys, numbers past a double, NUL, invalid UTF-8, oversize, odd timestamps, arbitrary
JSON) between valid messages of three other tenants, published back to back so that they share
its chunk. Every valid neighbour must be stored within seconds, and the hostile message must end
as exactly one outcome: its rows, or exactly one dead letter holding its exact bytes.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from ingest_tasks.envelope import Message
from ingest_tasks.pipeline import Accepted, process_message
from tests.integration.conftest import Pipeline
from tests.support import count, publisher, query, unique, wait_until

pytestmark = pytest.mark.integration

TS = "2025-10-07T15:30:00Z"
STORED_WITHIN_S = 10.0
MAX_PAYLOAD = 4096  # the pipeline fixture's INGEST_MAX_PAYLOAD_BYTES
TABLES = {"telem": "ts_measure", "ack": "cmd_ack", "event": "device_event"}
# Hypothesis draws a few rounds per family; each round is real traffic through every service, so
# shrinking (many more rounds) is off: a failure prints the message as drawn.
ROUNDS = settings(max_examples=5, deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate),
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass(frozen=True)
class Hostile:
    """A message as a device would publish it: which levels of the topic, and the payload bytes."""

    kind: str
    payload: bytes
    tenant_tail: str = ""
    site: str = "s1"
    device_tail: str = ""


SCRIPTS = [(0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F), (0x5D0, 0x5EA), (0x4E00, 0x9FFF), (0x1F600, 0x1F64F)]


def incompressible(n: int, seed: int, ranges: list[tuple[int, int]] = SCRIPTS) -> str:
    """`n` random characters (of several scripts: 1 to 4 bytes in UTF-8) that do not compress, and
    are valid in an MQTT topic (no control characters, no '+', '#' or '/')."""
    rng = random.Random(seed)
    return "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(n))


def ascii_key(n: int) -> str:
    """The issue's long identifier: `n` random letters, too long for a btree key uncompressed."""
    return incompressible(n, n, SCRIPTS[:2])


def v1(kind: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, dict[str, Any]] = {
        "telem": {"schema": "v1", "ts": TS, "points": [{"name": "p", "t": "float", "v": 1.5}]},
        "ack": {"schema": "v1", "cmd_id": "c1", "ok": True},
        "event": {"schema": "v1", "ts": TS, "type": "startup"},
    }
    return {**base[kind], **fields}


def with_raw(document: dict[str, Any], raw: bytes) -> bytes:
    """`document` as JSON with the value marked "\ue000" replaced by a raw JSON fragment."""
    return orjson.dumps(document).replace(b'"\xee\x80\x80"', raw)


kinds = st.sampled_from(list(TABLES))
seeds = st.integers(0, 2**32)


def nested(depth: int, bracket: str) -> bytes:
    opener, closer = ("[", "]") if bracket == "[" else ('{"a":', "}")
    return (opener * depth + "1" + closer * depth).encode()


@st.composite
def deep(draw: st.DrawFn) -> Hostile:
    kind = draw(kinds)
    bracket = draw(st.sampled_from(["[", "{"]))
    depth = draw(st.integers(30, 1900 if bracket == "[" else 600))
    where = draw(st.sampled_from({"telem": ["meta", "unknown"], "ack": ["err", "unknown"],
                                  "event": ["data", "unknown"]}[kind]))
    field = "extra" if where == "unknown" else where
    return Hostile(kind, with_raw(v1(kind, **{field: "\ue000"}), nested(depth, bracket)))


@st.composite
def long_topic_level(draw: st.DrawFn) -> Hostile:
    level = draw(st.sampled_from(["tenant", "site", "device"]))
    text = incompressible(draw(st.integers(100, 5000)), draw(seeds))
    kind = draw(kinds)
    payload = orjson.dumps(v1(kind))
    if level == "tenant":
        return Hostile(kind, payload, tenant_tail=text)
    if level == "site":
        return Hostile(kind, payload, site=text)
    return Hostile(kind, payload, device_tail=text)


@st.composite
def long_field(draw: st.DrawFn) -> Hostile:
    kind, field = draw(st.sampled_from([("telem", "name"), ("telem", "u"), ("telem", "v"), ("ack", "cmd_id"),
                                        ("ack", "err"), ("event", "type"), ("event", "severity")]))
    text = incompressible(draw(st.integers(60, 1000)), draw(seeds))
    if kind == "telem":
        point = {"name": "p", "t": "text", "v": "x", field: text}
        return Hostile(kind, orjson.dumps(v1(kind, points=[point])))
    return Hostile(kind, orjson.dumps(v1(kind, **{field: text})))


HUGE_NUMBERS = [b"1e400", b"-1e400", b"1" + b"0" * 400, b"1e-400", b"123456789012345678901234567890",
                b"18446744073709551616", b"-9223372036854775809", b"NaN", b"Infinity", b"1.0e+99999"]


@st.composite
def huge_number(draw: st.DrawFn) -> Hostile:
    number = draw(st.sampled_from(HUGE_NUMBERS))
    t = draw(st.sampled_from(["float", "int"]))
    document = draw(st.sampled_from([
        v1("telem", points=[{"name": "p", "t": t, "v": "\ue000"}]),
        v1("telem", meta={"x": "\ue000"}),
        v1("telem", ts="\ue000"),
    ]))
    return Hostile("telem", with_raw(document, number))


@st.composite
def nul(draw: st.DrawFn) -> Hostile:
    cases: list[tuple[str, dict[str, Any]]] = [
        ("telem", {"points": [{"name": "p\x00", "t": "float", "v": 1}]}),
        ("telem", {"points": [{"name": "p", "t": "text", "v": "a\x00b"}]}),
        ("telem", {"points": [{"name": "p", "t": "float", "v": 1, "u": "\x00"}]}),
        ("telem", {"meta": {"k\x00": "v"}}),
        ("telem", {"meta": {"k": ["\x00"]}}),
        ("ack", {"cmd_id": "c\x00"}),
        ("ack", {"err": "\x00"}),
        ("ack", {"extra": {"deep": "\x00"}}),
        ("event", {"type": "\x00"}),
        ("event", {"data": {"x": "\x00"}}),
    ]
    kind, fields = draw(st.sampled_from(cases))
    payload = orjson.dumps(v1(kind, **fields))  # NUL as the escape \u0000
    if draw(st.booleans()):
        payload = payload.replace(b"\\u0000", b"\x00")  # a raw NUL byte: not JSON at all
    return Hostile(kind, payload)


INVALID_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80"]


@st.composite
def invalid_utf8(draw: st.DrawFn) -> Hostile:
    kind = draw(kinds)
    valid = orjson.dumps(v1(kind))
    at = draw(st.integers(0, len(valid)))
    if draw(st.booleans()):
        return Hostile(kind, valid[:at] + draw(st.sampled_from(INVALID_UTF8)) + valid[at:])
    return Hostile(kind, with_raw(v1(kind, extra="\ue000"), b'"\\ud800"'))  # a lone surrogate escape


@st.composite
def oversize(draw: st.DrawFn) -> Hostile:
    size = draw(st.integers(MAX_PAYLOAD + 1, 65_536))
    document = orjson.dumps(v1("telem", meta={"pad": ""}))
    return Hostile("telem", document.replace(b'"pad":""', b'"pad":"' + b"x" * size + b'"'))


ODD_TS = ["1970-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
          "2025-10-07T15:30:00+99:00", "2025-02-30T00:00:00Z", "", "2025-10-07T15:30:00", "+275760-09-13T00:00:00Z",
          "1999-12-31T23:59:59.999999Z"]


@st.composite
def odd_ts(draw: st.DrawFn) -> Hostile:
    kind = draw(st.sampled_from(["telem", "event", "ack"]))
    field = "ts_exec" if kind == "ack" else "ts"
    return Hostile(kind, orjson.dumps(v1(kind, **{field: draw(st.sampled_from(ODD_TS))})))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


@st.composite
def arbitrary_json(draw: st.DrawFn) -> Hostile:
    kind = draw(kinds)
    value = draw(json_values)
    where = draw(st.sampled_from(["whole", "meta", "data", "points", "cmd_id", "ts"]))
    document: Any = value if where == "whole" else v1(kind, **{where: value})
    return Hostile(kind, json.dumps(document, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass"))


SHAPES: dict[str, Callable[[], st.SearchStrategy[Hostile]]] = {
    "deep nesting": deep, "long topic level": long_topic_level, "long field": long_field,
    "huge number": huge_number, "NUL": nul, "invalid UTF-8": invalid_utf8, "oversize": oversize,
    "odd timestamp": odd_ts, "arbitrary JSON": arbitrary_json,
}


# The messages that once cost their whole chunk (issue 11), tried first in every run.
EXPLICIT: dict[str, list[Hostile]] = {
    "deep nesting": [
        Hostile("telem", with_raw(v1("telem", meta={"a": "\ue000"}), nested(253, "["))),  # 607 bytes
        Hostile("ack", with_raw(v1("ack", extra="\ue000"), nested(1000, "["))),
        Hostile("event", with_raw(v1("event", data={"a": "\ue000"}), nested(300, "{"))),
    ],
    "long topic level": [Hostile("telem", orjson.dumps(v1("telem")), device_tail=ascii_key(3000)),
                         Hostile("telem", orjson.dumps(v1("telem")), tenant_tail=ascii_key(3000))],
    "long field": [Hostile("telem", orjson.dumps(v1("telem", points=[{"name": ascii_key(3000), "t": "int", "v": 1}]))),
                   Hostile("ack", orjson.dumps(v1("ack", cmd_id=ascii_key(3000))))],
    "arbitrary JSON": [Hostile("telem", b'{"schema": "v1", "ts": "2025-10-07T15:30:00Z", "points": []}')],
}


@dataclass(frozen=True)
class Neighbours:
    """Valid messages of three other tenants: two telemetry (two points each), an ack, an event."""

    telem: str
    ack: str
    event: str

    @classmethod
    def new(cls) -> Neighbours:
        return cls(unique("nt-"), unique("na-"), unique("ne-"))

    def stored(self, p: Pipeline) -> bool:
        return (count(p.database_url, "ts_measure", self.telem) == 4 and count(p.database_url, "cmd_ack", self.ack) == 1
                and count(p.database_url, "device_event", self.event) == 1)


def telemetry(device: int) -> dict[str, Any]:
    return v1("telem", points=[{"name": "a", "t": "float", "v": device}, {"name": "b", "t": "bool", "v": True}])


def publish_round(p: Pipeline, hostile: Hostile, neighbours: Neighbours) -> tuple[str, str, str]:
    """Neighbours before and after the hostile message; the hostile one's topic and identifiers."""
    tenant, device = unique("h-") + hostile.tenant_tail, unique("d-") + hostile.device_tail
    topic = p.topic(tenant, device, hostile.kind, site=hostile.site)
    with publisher() as pub:
        pub.publish(p.topic(neighbours.telem, "d1"), telemetry(1))
        pub.publish(p.topic(neighbours.ack, "d1", "ack"), v1("ack"))
        pub.publish(topic, hostile.payload)
        pub.publish(p.topic(neighbours.event, "d1", "event"), v1("event"))
        pub.publish(p.topic(neighbours.telem, "d2"), telemetry(2))
    return topic, tenant, device


def stores_nothing(hostile: Hostile, topic: str) -> bool:
    """Whether the worker's own pure stage takes the message and gives it no row to store."""
    outcome = process_message(0, Message(topic, hostile.payload, time.time()), MAX_PAYLOAD)
    return isinstance(outcome, Accepted) and not (outcome.measures or outcome.acks or outcome.events)


def outcomes(p: Pipeline, hostile: Hostile, topic: str, tenant: str, device: str) -> list[tuple[Any, ...]]:
    """The hostile message's dead letters (bytes, reason, detail), and ("rows", n) if it has rows."""
    dead = query(p.database_url, "SELECT payload, reason, detail FROM ingest_errors WHERE topic = %s", (topic,))
    rows = query(p.database_url, f"SELECT count(*) FROM {TABLES[hostile.kind]} WHERE tenant_id = %s "
                 "AND device_id = %s", (tenant, device))[0][0]
    return [*dead, *([("rows", rows)] if rows else [])]


@pytest.mark.parametrize("shape", SHAPES)
def test_one_hostile_message_costs_only_itself(pipeline: Pipeline, shape: str) -> None:
    @ROUNDS
    @given(hostile=SHAPES[shape]())
    def round_(hostile: Hostile) -> None:
        neighbours = Neighbours.new()
        topic, tenant, device = publish_round(pipeline, hostile, neighbours)

        wait_until(lambda: neighbours.stored(pipeline), timeout=STORED_WITHIN_S, what="every valid neighbour")
        if stores_nothing(hostile, topic):
            # Valid, with nothing to store (telemetry with no points): its outcome is that, not a
            # dead letter. It went out before the neighbour stored last, in the same chunk.
            assert outcomes(pipeline, hostile, topic, tenant, device) == []
            return
        found = wait_until(lambda: outcomes(pipeline, hostile, topic, tenant, device),
                           timeout=STORED_WITHIN_S, what="the hostile message's outcome")

        assert len(found) == 1, found
        if found[0][0] != "rows":
            payload, reason, detail = found[0]
            assert payload == hostile.payload
            assert reason != "retries_exhausted"
            assert detail
        assert pipeline.worker.popen.poll() is None and pipeline.listener.popen.poll() is None
        assert "raised unexpected" not in pipeline.worker.log()  # no task failed on it

    for hostile in EXPLICIT.get(shape, []):
        round_ = example(hostile=hostile)(round_)
    round_()

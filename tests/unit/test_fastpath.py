"""The fast path never accepts what the pydantic models refuse, and agrees on every value."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest_tasks.errors import PermanentError
from ingest_tasks.fastpath import fast_v1_rows
from ingest_tasks.limits import MAX_META_BYTES, MAX_POINT_NAME_CHARS, MAX_POINTS, MAX_UNIT_CHARS
from ingest_tasks.models import TelemetryV1, validate
from ingest_tasks.pipeline import measure_rows
from ingest_tasks.topics import Route

ROUTE = Route("acme", "s1", "dev", "telem")

# The integers orjson.loads hands over (beyond them it yields floats): documents only come from it.
JSON_INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)

scalars = st.one_of(
    st.none(), st.booleans(), JSON_INTS,
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5),
    st.sampled_from(["", "\x00", "a\x00b"]),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)), max_leaves=8)
TYPED = {
    "float": st.one_of(st.floats(allow_nan=False, allow_infinity=False), JSON_INTS),
    "int": JSON_INTS,
    "bool": st.booleans(),
    "enum": st.text(max_size=5),
    "text": st.text(max_size=5),
}


def around(limit: int) -> st.SearchStrategy[str]:
    """Strings of a limit's length give or take one, of 1-, 2- and 4-byte characters."""
    return st.builds(lambda n, c: c * n, st.integers(limit - 1, limit + 1), st.sampled_from(["a", "é", "\U0001f600"]))


@st.composite
def points(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-typed points, some with a wrong value, a bad name or unit, a missing key, or a
    name or unit at its length limit."""
    t = draw(st.sampled_from([*TYPED, "p"]))
    odd = draw(st.integers(0, 7))  # 0 wrong value, 1 bad name, 2 bad unit, 3 a key missing, 4-5 limits
    value = draw(scalars if odd == 0 else TYPED.get(t, scalars))
    name = draw(st.sampled_from(["", "a\x00", 7]) if odd == 1 else
                around(MAX_POINT_NAME_CHARS) if odd == 4 else st.text(min_size=1, max_size=4))
    unit = draw(st.sampled_from([1, "\x00"]) if odd == 2 else
                around(MAX_UNIT_CHARS) if odd == 5 else st.one_of(st.none(), st.text(max_size=3)))
    point = {"name": name, "t": t, "v": value, "u": unit, "x": 1}
    dropped = {draw(st.sampled_from(["name", "t", "v", "u", "x"]))} if odd == 3 else set()
    return {k: v for k, v in point.items() if k not in dropped}


@st.composite
def point_lists(draw: st.DrawFn) -> object:
    """Mostly a few points; sometimes not a list, or about MAX_POINTS of them (1 in 20: slow to check)."""
    shape = draw(st.integers(0, 19))
    if shape == 0:
        return [draw(points())] * draw(st.integers(MAX_POINTS - 1, MAX_POINTS + 1))
    return draw(scalars if shape == 1 else st.lists(points(), max_size=3))


timestamps = st.one_of(
    st.just("2025-10-07T15:30:00Z"),
    st.sampled_from(["2025-10-07T15:30:00Z", "2025-10-07T15:30:00+02:00", "2025-10-07T15:30:00",
                     "2025-10-07 15:30:00.123+00:00", "garbage", "2025-10-07T15:30:00Z\x00"]),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    scalars,
)
documents = st.fixed_dictionaries(
    {"schema": st.just("v1"), "ts": timestamps,
     "points": point_lists()},
    optional={"meta": st.one_of(
        st.just({"fw": "1.2.3"}), st.dictionaries(st.text(max_size=4), json_values, max_size=3), json_values,
        st.builds(lambda fw: {"fw": fw}, around(MAX_META_BYTES - len('{"fw":""}'))),
    )},
)


def slow_rows(payload: bytes) -> tuple[Any, ...] | None:
    """What the pydantic path makes of the payload: orjson, then the models."""
    try:
        return measure_rows(ROUTE, validate(TelemetryV1, orjson.loads(payload)))
    except (PermanentError, orjson.JSONDecodeError):
        return None


def fast_rows(payload: bytes) -> tuple[Any, ...] | None:
    fast = fast_v1_rows(ROUTE.tenant, ROUTE.device, payload)
    return None if fast is None else fast[0]


@settings(max_examples=3000)
@given(documents)
def test_the_fast_path_accepts_only_what_pydantic_accepts_with_the_same_rows(
    document: dict[str, Any],
) -> None:
    payload = orjson.dumps(document)
    fast = fast_rows(payload)
    if fast is not None:
        assert fast == slow_rows(payload)


def test_the_fast_path_takes_an_ordinary_message() -> None:
    document = {"schema": "v1", "ts": "2025-10-07T15:30:00Z", "meta": {"fw": "1"},
                "points": [{"name": "a", "t": "float", "v": 1}, {"name": "b", "t": "bool", "v": True},
                           {"name": "c", "t": "enum", "v": "X", "u": "u"}, {"name": "d", "t": "int", "v": 3}]}
    payload = orjson.dumps(document)
    assert fast_rows(payload) is not None
    assert fast_rows(payload) == slow_rows(payload)


POINT = b'{"name": "a", "t": "float", "v": 1}'


def v1(points: bytes = POINT, more: bytes = b"") -> bytes:
    return b'{"schema": "v1", "ts": "2025-10-07T15:30:00Z", "points": [%s]%s}' % (points, more)


# The fast path takes a payload (True) or leaves it to pydantic; what it takes, it reads the same.
@pytest.mark.parametrize(("payload", "fast_takes"), [
    pytest.param(b'{"ts": "x", %s' % v1()[1:], True, id="a repeated key: the last one counts"),
    pytest.param(v1(b'{"v": 2, "name": "a", "t": "int"}'), True, id="t after v"),
    pytest.param(v1(b'{"name": "a", "t": "int", "t": "bool", "v": true}'), False, id="a repeated tag"),
    pytest.param(v1(b'{"name": "a", "t": "int", "v": 18446744073709551616}'), False, id="an int past 64 bits"),
    pytest.param(v1(b'{"name": "a", "t": "float", "v": 18446744073709551616}'), True,
                 id="a float written as an int past 64 bits"),
    pytest.param(v1(b'{"name": "a", "t": "float", "v": 1e999}'), False, id="a float past the double range"),
    pytest.param(v1(more=b', "meta": {"n": 18446744073709551616}'), False, id="meta with an int past 64 bits"),
    # Stricter than needed, and rare: pydantic takes it (test_pipeline).
    pytest.param(v1(more=b', "meta": {"a\\\\u0000": 1}'), False, id="an escaped backslash before u0000 in meta"),
    pytest.param(v1(more=b', "fw": "1"'), True, id="an unknown field"),
    pytest.param(v1(b'{"name": "a", "t": "float", "v": 1, "x": [1]}'), True, id="an unknown field in a point"),
    pytest.param(v1(more=b', "x": %s' % (b"[" * 31 + b"]" * 31)), True, id="an unknown field at the nesting limit"),
    pytest.param(v1(more=b', "x": %s' % (b"[" * 32 + b"]" * 32)), False, id="an unknown field past the nesting limit"),
    pytest.param(v1(more=b', "x": %s' % (b"[" * 5000 + b"]" * 5000)), False, id="an unknown field 5000 deep"),
    pytest.param(v1(more=b', "meta": {"a": %s}' % (b"[" * 30 + b"]" * 30)), True, id="meta at the nesting limit"),
    pytest.param(v1(more=b', "meta": {"a": %s}' % (b"[" * 31 + b"]" * 31)), False, id="meta past the nesting limit"),
    pytest.param(v1(more=b', "meta": {"a": %s}' % (b"[" * 5000 + b"]" * 5000)), False, id="meta 5000 deep"),
    pytest.param(v1(b'{"name": "a\\u0000", "t": "text", "v": "x"}'), False, id="an escaped NUL in a name"),
    pytest.param(v1(b'{"name": "a", "t": "text", "v": "\\u0000"}'), False, id="an escaped NUL in a value"),
    pytest.param(v1(b'{"name": "\xff", "t": "text", "v": "x"}'), False, id="not UTF-8"),
    pytest.param(v1() + b" x", False, id="trailing data"),
    pytest.param(b'[{"schema": "v1"}]', False, id="not an object"),
    pytest.param(v1().replace(b'"v1"', b'"v2"'), False, id="another schema"),
    pytest.param(v1(more=b', "meta": null'), True, id="meta null"),
    pytest.param(v1(b'{"name": "a", "t": "bool", "v": 1}'), False, id="bool given as 1"),
    pytest.param(v1(b'{"name": "a", "t": "int", "v": 1.0}'), False, id="int given as 1.0"),
    pytest.param(v1(b'{"name": "a", "t": "float", "v": -0.0, "u": null}'), True, id="negative zero, unit null"),
])
def test_the_fast_path_agrees_with_pydantic_on_tricky_bytes(payload: bytes, fast_takes: bool) -> None:
    fast = fast_rows(payload)
    assert (fast is not None) == fast_takes
    if fast_takes:
        assert fast == slow_rows(payload)

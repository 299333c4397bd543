"""parse_topic: `traksense/{tenant}/{site}/{device}/{kind}` into a Route, or InvalidTopic; and its
cache of recent topics, bounded in bytes."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from ingest_tasks.errors import InvalidTopic
from ingest_tasks.limits import MAX_TOPIC_LEVEL_CHARS
from ingest_tasks.topics import (
    CACHED_TOPIC_MAX_CHARS,
    KINDS,
    TOPIC_CACHE_ENTRIES,
    TOPIC_CACHE_MAX_BYTES,
    Route,
    _parse_cached,
    parse_topic,
)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_routed_with_its_identifiers(kind: str) -> None:
    assert parse_topic(f"traksense/acme/plant-7/chiller.01/{kind}") == Route(
        "acme",
        "plant-7",
        "chiller.01",
        kind,  # type: ignore[arg-type]
    )


def test_identifiers_are_opaque_and_kept_verbatim() -> None:
    route = parse_topic("traksense/Ténant Ä/site 1/dev:02#x/telem")
    assert (route.tenant, route.site, route.device) == ("Ténant Ä", "site 1", "dev:02#x")


@pytest.mark.parametrize(
    ("topic", "detail"),
    [
        pytest.param("traksense/acme/site/telem", "must have 5 levels", id="four levels"),
        pytest.param("traksense/acme/site/dev/telem/extra", "must have 5 levels", id="six levels"),
        pytest.param("traksense/acme/site/dev/telem/", "must have 5 levels", id="trailing slash"),
        pytest.param("", "must have 5 levels", id="empty topic"),
        pytest.param("traksense//site/dev/telem", "level tenant is empty", id="empty tenant"),
        pytest.param("traksense/acme//dev/telem", "level site is empty", id="empty site"),
        pytest.param("traksense/acme/site//telem", "level device is empty", id="empty device"),
        pytest.param("/acme/site/dev/telem", "level prefix is empty", id="empty prefix"),
        pytest.param("traksense/acme/site/dev/", "kind must be one of telem, ack, event", id="empty kind"),
        pytest.param("traksense/acme/site/dev/status", "got 'status'", id="unknown kind"),
        pytest.param("traksense/acme/site/dev/TELEM", "got 'TELEM'", id="kind is case sensitive"),
        pytest.param("traksense/ac\x00me/site/dev/telem", "tenant contains NUL", id="NUL in tenant"),
        pytest.param("traksense/acme/si\x00te/dev/telem", "site contains NUL", id="NUL in site"),
        pytest.param("traksense/acme/site/\x00/telem", "device contains NUL", id="NUL in device"),
        pytest.param("traksense/acme/site/dev/telem\x00", "got 'telem\\x00'", id="NUL in kind"),
    ],
)
def test_a_malformed_topic_is_invalid_topic(topic: str, detail: str) -> None:
    with pytest.raises(InvalidTopic) as caught:
        parse_topic(topic)
    assert caught.value.reason == "invalid_topic"
    assert detail in caught.value.detail
    assert "\x00" not in caught.value.detail


@pytest.mark.parametrize("level", ["tenant", "site", "device"])
def test_a_level_longer_than_its_limit_is_invalid_topic(level: str) -> None:
    levels = {"tenant": "acme", "site": "s", "device": "d", level: "é" * (MAX_TOPIC_LEVEL_CHARS + 1)}
    with pytest.raises(InvalidTopic) as caught:
        parse_topic(f"traksense/{levels['tenant']}/{levels['site']}/{levels['device']}/telem")
    assert caught.value.detail == f"topic level {level}: 129 characters, over the limit of {MAX_TOPIC_LEVEL_CHARS}"


def test_levels_at_their_limit_are_kept_whole() -> None:
    longest = "x" * MAX_TOPIC_LEVEL_CHARS
    assert parse_topic(f"traksense/{longest}/{longest}/{longest}/ack") == Route(longest, longest, longest, "ack")


def test_a_topic_longer_than_any_cached_one_is_parsed_but_not_remembered() -> None:
    _parse_cached.cache_clear()
    long_prefix = "p" * CACHED_TOPIC_MAX_CHARS  # the prefix is the operator's, so it has no limit
    assert parse_topic(f"{long_prefix}/acme/s/d/telem") == Route("acme", "s", "d", "telem")
    assert _parse_cached.cache_info().currsize == 0
    parse_topic("traksense/acme/s/d/telem")
    assert _parse_cached.cache_info().currsize == 1


def worst_topic(i: int) -> str:
    """A distinct valid topic of the longest cached length, in 4-byte characters."""
    wide = "\U0001f600"
    level = f"{i:08d}" + wide * (MAX_TOPIC_LEVEL_CHARS - 8)
    prefix = wide * (CACHED_TOPIC_MAX_CHARS - 3 * MAX_TOPIC_LEVEL_CHARS - len("event") - 4)
    return f"{prefix}/{level}/{level}/{level}/event"


def test_the_topic_cache_holds_at_most_its_bound_in_bytes() -> None:
    _parse_cached.cache_clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(TOPIC_CACHE_ENTRIES + 100):
            topic = worst_topic(i)
            assert len(topic) == CACHED_TOPIC_MAX_CHARS
            parse_topic(topic)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        _parse_cached.cache_clear()
    assert _parse_cached.cache_info().maxsize == TOPIC_CACHE_ENTRIES
    assert held <= TOPIC_CACHE_MAX_BYTES, f"{held} bytes held, over {TOPIC_CACHE_MAX_BYTES}"

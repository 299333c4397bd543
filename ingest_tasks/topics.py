"""Topic parsing: `traksense/{tenant}/{site}/{device}/{kind}` into its identifiers.

The identifiers come from the topic only; a payload never overrides them. Each of tenant, site and
device is at most `limits.MAX_TOPIC_LEVEL_CHARS` characters (they are keys of indexed columns).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from ingest_tasks.errors import InvalidTopic
from ingest_tasks.limits import MAX_TOPIC_LEVEL_CHARS, over_limit

Kind = Literal["telem", "ack", "event"]
KINDS: tuple[Kind, ...] = ("telem", "ack", "event")
LEVELS = 5

# A fleet publishes on the same topics over and over: each worker process remembers the routes of
# recent ones. The cache is keyed by what devices send, so it is bounded in bytes, not only in
# entries: it keeps only topics no longer than a valid topic with a prefix of up to 128 characters
# (4 levels of 128, the longest kind, 4 slashes). Such an entry, in 4-byte characters, is ~4.1 KB
# on CPython 3.11 (the key, the Route and its three strings, the cache's links): at most ~34 MB a
# worker process; topics of ~60 ASCII characters take ~0.3 KB an entry, ~2.5 MB. A longer (valid)
# topic is parsed each time. (An invalid topic raises, and lru_cache keeps no exceptions.)
CACHED_TOPIC_MAX_CHARS = 4 * MAX_TOPIC_LEVEL_CHARS + len("event") + 4
TOPIC_CACHE_ENTRIES = 8192
TOPIC_CACHE_MAX_BYTES = 36 * 2**20  # the worst case above, with some margin (a test holds the cache to it)


@dataclass(frozen=True, slots=True)
class Route:
    tenant: str
    site: str
    device: str
    kind: Kind


def parse_topic(topic: str) -> Route:
    if len(topic) <= CACHED_TOPIC_MAX_CHARS:
        return _parse_cached(topic)
    return _parse(topic)


def _parse(topic: str) -> Route:
    levels = topic.split("/")
    if len(levels) != LEVELS:
        raise InvalidTopic(f"topic must have {LEVELS} levels prefix/tenant/site/device/kind, got {len(levels)}")
    prefix, tenant, site, device, kind = levels
    for name, value in (("prefix", prefix), ("tenant", tenant), ("site", site), ("device", device)):
        if not value:
            raise InvalidTopic(f"topic level {name} is empty")
        if "\x00" in value:
            raise InvalidTopic(f"topic level {name} contains NUL")
        if len(value) > MAX_TOPIC_LEVEL_CHARS and name != "prefix":  # the prefix is the operator's
            raise InvalidTopic(f"topic level {name}: {over_limit(len(value), 'characters', MAX_TOPIC_LEVEL_CHARS)}")
    if kind not in KINDS:
        raise InvalidTopic(f"topic kind must be one of {', '.join(KINDS)}, got {kind[:40]!r}")
    return Route(tenant, site, device, kind)


_parse_cached = lru_cache(maxsize=TOPIC_CACHE_ENTRIES)(_parse)

"""Topic parsing: `traksense/{tenant}/{site}/{device}/{kind}` into its identifiers.

The identifiers come from the topic only; a payload never overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from ingest_tasks.errors import InvalidTopic

Kind = Literal["telem", "ack", "event"]
KINDS: tuple[Kind, ...] = ("telem", "ack", "event")
LEVELS = 5


@dataclass(frozen=True, slots=True)
class Route:
    tenant: str
    site: str
    device: str
    kind: Kind


# A fleet publishes on the same topics over and over: remember the routes of recent ones.
# (An invalid topic raises, and lru_cache does not keep exceptions.)
@lru_cache(maxsize=65_536)
def parse_topic(topic: str) -> Route:
    levels = topic.split("/")
    if len(levels) != LEVELS:
        raise InvalidTopic(f"topic must have {LEVELS} levels prefix/tenant/site/device/kind, got {len(levels)}")
    prefix, tenant, site, device, kind = levels
    for name, value in (("prefix", prefix), ("tenant", tenant), ("site", site), ("device", device)):
        if not value:
            raise InvalidTopic(f"topic level {name} is empty")
        if "\x00" in value:
            raise InvalidTopic(f"topic level {name} contains NUL")
    if kind not in KINDS:
        raise InvalidTopic(f"topic kind must be one of {', '.join(KINDS)}, got {kind[:40]!r}")
    return Route(tenant, site, device, kind)


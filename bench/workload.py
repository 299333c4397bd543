"""Pure: which message goes where, what it says, and how many rows the run must produce.

Message `i` (0-based, over the whole run) belongs to device `i % devices`, and device `d` to
tenant `d % tenants` and to publisher `d % publishers`, so every device has exactly one
publisher, which keeps that device's timestamps strictly increasing: the unique key
(tenant, device, point, ts) can then never fold two messages into one row.
Invalid messages are spread evenly: exactly floor(messages * fraction) of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

TOPIC_PREFIX = "traksense"
TOPIC_FILTER = f"{TOPIC_PREFIX}/+/+/+/telem"
FIRST_POINT = "p0"  # latency is measured on this point: one row per valid message

# Three kinds of bad input, each a different DLQ reason in the service.
INVALID_PAYLOADS = (
    b'{"schema": "v1", "ts": ',  # invalid_json (truncated)
    b'{"schema": "v1", "ts": "%s", "points": [{"name": "p0", "t": "float", "v": "hot"}]}',  # validation
    b'{"firmware": "9.9", "ts": "%s"}',  # unknown_schema
)


@dataclass(frozen=True)
class Expected:
    messages: int
    valid: int
    invalid: int
    rows: int  # ts_measure rows

    @property
    def total_rows(self) -> int:
        return self.rows + self.invalid


def expected(messages: int, points: int, fraction: float) -> Expected:
    invalid = sum(1 for i in range(messages) if is_invalid(i, fraction))
    valid = messages - invalid
    return Expected(messages, valid, invalid, valid * points)


def is_invalid(index: int, fraction: float) -> bool:
    return math.floor((index + 1) * fraction) != math.floor(index * fraction)


def device_indexes(publisher: int, publishers: int, devices: int) -> list[int]:
    return list(range(publisher, devices, publishers))


def message_indexes(
    publisher: int, publishers: int, devices: int, messages: int
) -> Iterator[tuple[int, int]]:
    """(global index, device) of the messages one publisher sends, round-robin over its devices."""
    mine = device_indexes(publisher, publishers, devices)
    for round_ in range(math.ceil(messages / devices)):
        base = round_ * devices
        for device in mine:
            if base + device < messages:
                yield base + device, device


def topic(device: int, tenants: int) -> str:
    return f"{TOPIC_PREFIX}/t{device % tenants}/s1/d{device}/telem"


def point_names(points: int) -> list[str]:
    return [f"p{n}" for n in range(points)]


def telemetry(ts: str, names: list[str], index: int) -> bytes:
    value = (index % 1000) / 10
    points = [{"name": name, "t": "float", "v": value + n, "u": "C"} for n, name in enumerate(names)]
    return orjson.dumps({"schema": "v1", "ts": ts, "points": points, "meta": {"fw": "1.2.3"}})


def invalid(ts: str, index: int) -> bytes:
    template = INVALID_PAYLOADS[index % len(INVALID_PAYLOADS)]
    return template.replace(b"%s", ts.encode()) if b"%s" in template else template


class IsoClock:
    """ISO 8601 UTC timestamps with milliseconds, strictly increasing per device."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        self._last: dict[int, int] = {}

    def stamp(self, device: int, now_ms: int) -> str:
        ms = max(now_ms, self._last.get(device, -1) + 1)
        self._last[device] = ms
        second, milli = divmod(ms, 1000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{milli:03d}Z"

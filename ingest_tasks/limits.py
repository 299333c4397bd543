"""Per-message limits (CONTRACT.md "Payloads": limits), as named values with their units, and the
checks that need only the payload (nesting depth) or a value and the time it was received (the
`ts` window).

Why limits at all: PostgreSQL refuses an index row over ~2.7 kB (SQLSTATE 54000), orjson and
msgspec refuse or recurse on deep nesting, and `meta` is copied onto every row of its message.
Past a limit a message is a `validation_error` (`invalid_topic` for a topic level) whose detail
names the field and the limit. Pure: no settings, no clock (the receive time is passed in), no I/O.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import orjson

from ingest_tasks.errors import InvalidJson, PermanentError, ValidationFailed

MAX_NESTING_LEVELS = 32  # JSON containers inside each other; the payload object is level 1
MAX_TOPIC_LEVEL_CHARS = 128  # tenant, site, device, each
MAX_POINT_NAME_CHARS = 128
MAX_UNIT_CHARS = 32
MAX_CMD_ID_CHARS = 128
MAX_EVENT_TYPE_CHARS = 64
MAX_POINTS = 1000  # points per telemetry message
MAX_META_BYTES = 2048  # telemetry `meta` as stored: compact JSON, UTF-8
MAX_DATA_BYTES = 16384  # event `data` as stored: compact JSON, UTF-8
TS_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)  # devices without a clock send 1970
TS_MAX_AHEAD_SECONDS = 24 * 3600  # after the listener received the message

NESTING_DETAIL = (
    f"nested more than {MAX_NESTING_LEVELS} levels deep, over the limit of {MAX_NESTING_LEVELS}"
    " levels (the payload object is level 1)"
)
_EARLIEST_SECONDS = TS_EARLIEST.timestamp()
_EARLIEST_SHOWN = TS_EARLIEST.isoformat().replace("+00:00", "Z")
# A JSON string (its closing quote optional, so that a prefix cut inside one is read the same),
# possessive so that the engine never backtracks into it.
_STRING = re.compile(rb'"(?:[^"\\]++|\\[\s\S])*+"?')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_SPECIAL = bytes(b for b in range(256) if b not in b'[]{}"\\')
_SQUARE = bytes.maketrans(b"{}", b"[]")


def over_limit(size: int, unit: str, limit: int) -> str:
    """The words every limit's detail uses: `300 characters, over the limit of 128`."""
    return f"{size} {unit}, over the limit of {limit}"


def check_stored_bytes(field: str, text: bytes, limit: int) -> None:
    if len(text) > limit:
        raise ValidationFailed(f"{field}: {over_limit(len(text), 'bytes as stored (compact JSON)', limit)}")


def within_ts_window(ts: datetime, received_at: float) -> bool:
    """Whether `ts` lies between TS_EARLIEST and TS_MAX_AHEAD_SECONDS after `received_at` (unix s).

    A receive time before TS_EARLIEST is a listener without a clock, not a device ahead of its
    time: then only the earliest bound holds, rather than every message being refused."""
    seconds = ts.timestamp()  # an aware datetime of years 1..9999: never overflows
    return seconds >= _EARLIEST_SECONDS and (
        seconds <= received_at + TS_MAX_AHEAD_SECONDS or received_at < _EARLIEST_SECONDS
    )


def check_ts(field: str, ts: datetime, received_at: float) -> None:
    """Raise ValidationFailed, naming `field`, when `ts` is outside its window (`within_ts_window`)."""
    if within_ts_window(ts, received_at):
        return
    seconds = ts.timestamp()
    if seconds < _EARLIEST_SECONDS:
        raise ValidationFailed(
            f"{field}: {ts.isoformat()} is before {_EARLIEST_SHOWN}, the earliest accepted"
            " (is the device's clock set?)"
        )
    raise ValidationFailed(
        f"{field}: {ts.isoformat()} is more than {TS_MAX_AHEAD_SECONDS // 3600} hours after the message"
        f" was received ({_iso(received_at)})"
    )


def _iso(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    except (OverflowError, OSError, ValueError):  # a receive time no clock gives
        return f"{seconds} unix seconds"


def within_nesting(payload: bytes, levels: int = MAX_NESTING_LEVELS) -> bool:
    """False when the JSON in `payload` nests deeper than `levels`. Exact for valid JSON; invalid
    JSON may also give False, and `nesting_error` then tells which problem comes first."""
    # Nesting past the limit needs more opening brackets than levels: most payloads stop here.
    # (Counted as what deleting them removes: bytes.replace finds them with memchr, about twice
    # as fast as bytes.count on a few hundred bytes.)
    if 2 * len(payload) - len(payload.replace(b"[", b"")) - len(payload.replace(b"{", b"")) <= levels:
        return True
    return _balanced_within(_brackets(payload), levels)


def _brackets(payload: bytes) -> bytes:
    """The structural brackets of `payload`, strings left out, all written `[` and `]`."""
    # Without escapes, quotes alternate opening and closing: keep only brackets and quotes (in C),
    # drop the empty strings that are most strings now, and split off what remains inside quotes.
    # A regex over every string costs ~15 times as much; it is kept for payloads with escapes.
    compact = payload.translate(_SQUARE, _NOT_SPECIAL)
    if b"\\" in compact:
        return _STRING.sub(b"", payload).translate(_SQUARE, _NOT_BRACKETS)
    compact = compact.replace(b'""', b"")
    return b"".join(compact.split(b'"')[::2]) if b'"' in compact else compact


def _balanced_within(brackets: bytes, levels: int = MAX_NESTING_LEVELS) -> bool:
    # Each pass removes the innermost pairs, so a balanced string is empty after as many passes
    # as it has levels: a few C-speed passes, where a Python loop over each byte would cost ms.
    for _ in range(levels):
        if not brackets:
            return True
        brackets = brackets.replace(b"[]", b"")
    return not brackets


def nesting_error(payload: bytes) -> PermanentError:
    """What is wrong with a payload that `within_nesting` refused: ValidationFailed when, read
    from the start, it nests deeper than the limit before it stops being JSON; else InvalidJson."""
    try:
        document = orjson.loads(payload)  # safe: orjson stops at its own depth limit (1024)
    except orjson.JSONDecodeError as exc:
        if _prefix_within_nesting(payload, exc.pos):
            return InvalidJson(json_error(exc))
        return ValidationFailed(f"payload: {NESTING_DETAIL}")
    return ValidationFailed(f"{deep_path(document)}: {NESTING_DETAIL}")


def json_error(exc: orjson.JSONDecodeError) -> str:
    return f"payload is not UTF-8 JSON: {exc}"


def _prefix_within_nesting(payload: bytes, chars: int) -> bool:
    """Whether the JSON read before the error (at character `chars`) stays within the limit."""
    prefix = payload.decode("utf-8", "surrogateescape")[:chars].encode("utf-8", "surrogateescape")
    brackets = _brackets(prefix)
    unclosed = brackets.count(b"[") - brackets.count(b"]")
    return unclosed >= 0 and _balanced_within(brackets + b"]" * unclosed)


def deep_path(document: object) -> str:
    """Where the first container past the nesting limit is, as `meta.a[0]...`: the field, not
    all its levels."""
    segments = _deep_segments(document, 1) or []
    shown = "".join(segments[:3]).removeprefix(".") or "payload"
    return shown + "..." if len(segments) > 3 else shown


def _deep_segments(value: object, level: int) -> list[str] | None:
    # Recursion stops one level past the limit, so it is as deep as MAX_NESTING_LEVELS + 1.
    if level > MAX_NESTING_LEVELS:
        return []
    if isinstance(value, dict):
        items = [(f".{_shown(str(key))}", item) for key, item in value.items()]
    elif isinstance(value, list):
        items = [(f"[{index}]", item) for index, item in enumerate(value)]
    else:
        return None
    for segment, item in items:
        found = _deep_segments(item, level + 1) if isinstance(item, dict | list) else None
        if found is not None:
            return [segment, *found]
    return None


def _shown(key: str) -> str:
    # The path goes into the DLQ detail (a text column): no NUL, and a key cut to a readable size.
    return key.replace("\x00", "\\u0000")[:40]

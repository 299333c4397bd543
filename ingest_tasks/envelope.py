"""The chunk wire format shared by the listener (producer) and the workers (consumer).

A chunk is one Celery task: an id the listener picks once (kept across retries and redeliveries,
so the DLQ can tell a redelivered message from a new one) and the messages in arrival order.
Payloads travel as raw bytes; the task serializer (msgpack) is binary-safe, so a payload that is
not UTF-8 still reaches the DLQ byte-exact.

Chunks are compressed (zstd) on their way through Redis. kombu's Redis transport keeps each message
as JSON with its body in base64, and re-encodes it for its `unacked` hash when a worker takes it:
800 messages are ~270 KB of msgpack and ~360 KB in Redis, which the listener, Redis and the
worker's main process each copy and encode several times. Compressed, a chunk of device JSON is a
tenth of that or less, for ~0.5 µs of CPU per message to compress and ~0.2 to decompress.

This module imports nothing from the listener.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Protocol

import msgspec
from kombu import compression

TASK_NAME = "ingest_tasks.ingest_chunk"
QUEUE = "ingest"
COMPRESSION = "zstd"  # kombu's name for the codec: task messages, and the ledger's copies

# [topic, payload, received_at]: a list, not a dict, because it is repeated 800 times a chunk.
WireMessage = list[object]


# msgspec structs, not dataclasses: a frozen dataclass costs ~1 µs to build, and there is one of
# these per message on both sides.
class Message(msgspec.Struct, frozen=True):
    topic: str
    payload: bytes
    received_at: float  # unix seconds when the listener got it


class Received(Protocol):
    """What the wire needs of a received message (a `Message`, or the listener's delivery)."""

    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def received_at(self) -> float: ...


class Chunk(msgspec.Struct, frozen=True):
    id: str
    messages: tuple[Message, ...]


def new_chunk_id() -> str:
    return uuid.uuid4().hex


def compress(body: bytes) -> bytes:
    compressed, _content_type = compression.compress(body, COMPRESSION)
    return bytes(compressed)


def decompress(body: bytes) -> bytes:
    return bytes(compression.decompress(body, COMPRESSION))


def check_compression() -> None:
    """Stop at start, not at the first chunk, when the zstd codec is not installed."""
    try:
        compression.get_encoder(COMPRESSION)
    except KeyError:
        raise RuntimeError(f"kombu has no {COMPRESSION} codec: install backports.zstd "
                           "(requirements.txt; built into Python 3.14 and later)") from None


def args_summary(chunk_id: str, wire: Sequence[object]) -> str:
    """What Celery shows of a chunk's arguments (its `argsrepr`: task headers and events, Flower,
    the worker's debug log) instead of a repr of the payloads, which must never reach a log."""
    return f"({chunk_id!r}, <{len(wire)} messages>)"


def to_wire(messages: Iterable[Received]) -> list[WireMessage]:
    return [[m.topic, m.payload, m.received_at] for m in messages]


def from_wire(chunk_id: str, wire: Sequence[Sequence[object]]) -> Chunk:
    """Rebuild a chunk from task arguments; a malformed one is a bug, so it raises TypeError."""
    messages = []
    for item in wire:
        topic, payload, received_at = item
        if not isinstance(topic, str) or not isinstance(payload, bytes | bytearray):
            raise TypeError(f"chunk {chunk_id}: malformed message {type(topic)}, {type(payload)}")
        if not isinstance(received_at, int | float):
            raise TypeError(f"chunk {chunk_id}: malformed received_at {received_at!r}")
        messages.append(Message(topic, bytes(payload), float(received_at)))
    return Chunk(chunk_id, tuple(messages))

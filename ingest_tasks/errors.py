"""The one small tree of failures.

`PermanentError`s are about one message: retrying cannot help, so it is dead-lettered with the
error's `reason`. `TransientError`s are about the chunk's transport: the chunk is retried, which is
safe because every write is idempotent. Foreign exceptions are translated at the boundary.
"""

from __future__ import annotations

from typing import ClassVar


class IngestError(Exception):
    """Anything ingest raises on purpose."""


class PermanentError(IngestError):
    """This message can never be stored as it is: dead-letter it, never retry."""

    reason: ClassVar[str]

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidJson(PermanentError):
    reason = "invalid_json"


class ValidationFailed(PermanentError):
    reason = "validation_error"


class UnknownSchema(PermanentError):
    reason = "unknown_schema"


class PayloadTooLarge(PermanentError):
    reason = "payload_too_large"


class InvalidTopic(PermanentError):
    reason = "invalid_topic"


class DbRejected(PermanentError):
    reason = "db_rejected"


class RetriesExhausted(PermanentError):
    reason = "retries_exhausted"


class TransientError(IngestError):
    """The chunk could not be stored now; retry it later."""


class StorageUnavailable(TransientError):
    """PostgreSQL is unreachable, restarting, or asked us to try again (deadlock, serialization)."""


REASONS: tuple[str, ...] = tuple(
    cls.reason
    for cls in (
        InvalidJson,
        ValidationFailed,
        UnknownSchema,
        PayloadTooLarge,
        InvalidTopic,
        DbRejected,
        RetriesExhausted,
    )
)

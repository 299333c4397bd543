"""The one small tree of failures.

`PermanentError`s are about one message: retrying cannot help, so it is dead-lettered with the
error's `reason`. `TransientError`s are about the chunk's transport: the chunk is retried, which is
safe because every write is idempotent. Foreign exceptions are translated at the boundary.
"""

from __future__ import annotations

from enum import Enum
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


class TaskTimedOut(TransientError):
    """The chunk's task ran past its soft time limit (a call hung somewhere): retry it."""


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


class Blame(Enum):
    """Whose problem a database error is: the decision between db_rejected and a retry."""

    MESSAGE = "message"  # this message's rows can never be stored as they are: db_rejected
    CHUNK = "chunk"  # the database, its configuration or the connection: retry the chunk
    UNKNOWN = "unknown"  # the message's, unless every message of the chunk meets it


# By SQLSTATE class (its first two characters): a refusal of the row's own data, whatever else
# the chunk holds. 21: cardinality (one statement touching a row twice), 22: data exception (NUL,
# bad JSON, a number out of range), 23: integrity (an operator's CHECK, NOT NULL, a key), 44: WITH
# CHECK OPTION, 54: program limit (54000 a key too long for its index, 54001 JSON nested past the
# stack depth).
MESSAGE_CLASSES = frozenset({"21", "22", "23", "44", "54"})
# Classes that retrying can mend, and that would meet every message alike, so they are never one
# message's fault. 08 connection; 40 serialization failure, deadlock; 53 disk full, out of memory,
# too many connections; 57 admin or crash shutdown, cannot connect now, statement timeout (57014);
# 58 system (I/O) error; 25 invalid transaction state (25006: a read-only standby after a failover).
# 42 (a missing table before the migrations ran, a privilege the writer lacks, row-level security)
# and 28/3D/3F (login, database, schema) are misconfigurations: an operator fixes them, and then
# the retried chunk lands whole; calling them db_rejected would fill the DLQ with every message
# that arrives until then.
CHUNK_CLASSES = frozenset({"08", "25", "28", "3D", "3F", "40", "42", "53", "57", "58"})
CHUNK_STATES = frozenset({"55P03"})  # lock_not_available: lock_timeout expired behind someone else


def blame(sqlstate: str | None) -> Blame:
    """Whose problem a database error with this SQLSTATE is; None (no SQLSTATE: the connection
    broke before the server answered) is the chunk's."""
    if sqlstate is None or sqlstate in CHUNK_STATES or sqlstate[:2] in CHUNK_CLASSES:
        return Blame.CHUNK
    if sqlstate[:2] in MESSAGE_CLASSES:
        return Blame.MESSAGE
    # P0 (a trigger's RAISE), XX (internal), 0A (not supported), 55 ...: it may be the row or the
    # setup. The store finds out by writing the chunk apart (store.Apart): a refusal no message escapes
    # is the chunk's (retried); one that some messages escape is the refused ones' (db_rejected).
    return Blame.UNKNOWN

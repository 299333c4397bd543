"""Thin tasks: decode chunk -> process -> store -> retry or dead-letter.

Owns the worker process's lifecycle (one database connection per pool process, opened after
fork) and the retry-or-give-up decision: a transient storage failure, or the task's soft time
limit, retries the chunk. Refuses to parse, validate or build SQL itself.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Sequence
from typing import Any, NoReturn

import redis
from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_shutdown
from redis.exceptions import RedisError

from ingest_tasks import metrics
from ingest_tasks.app import (
    PURGE_TASK,
    RETENTION_TASK,
    TASK_SOFT_TIME_LIMIT_S,
    TASK_TIME_LIMIT_S,
    create_app,
    redis_socket_options,
)
from ingest_tasks.dlq.queries import purge_dead_letters
from ingest_tasks.envelope import QUEUE, TASK_NAME, Chunk, args_summary, from_wire
from ingest_tasks.errors import PermanentError, RetriesExhausted, TaskTimedOut, TransientError
from ingest_tasks.gc_tuning import tune_gc
from ingest_tasks.ledger import Ledger
from ingest_tasks.logs import configure_logging
from ingest_tasks.multiproc import remove_multiprocess_dir
from ingest_tasks.pipeline import Accepted, Outcome, Rejected, process_chunk
from ingest_tasks.retention import purge_telemetry
from ingest_tasks.retry import RetryPolicy
from ingest_tasks.settings import load_settings
from ingest_tasks.store import Store, WriteResult
from ingest_tasks.topics import parse_topic

log = logging.getLogger(__name__)

settings = load_settings()
configure_logging(settings.log_level, settings.log_format)
app = create_app(settings)
policy = RetryPolicy(settings.retry_max, settings.retry_backoff_s, settings.retry_backoff_max_s)
store = Store(settings.database_url)
ledger = Ledger(redis.Redis.from_url(settings.celery_broker_url, **redis_socket_options()))


@worker_init.connect
def _serve_metrics(**_: object) -> None:
    metrics.serve(settings.worker_metrics_port, settings.celery_broker_url, QUEUE)
    tune_gc()  # before the pool forks, so its processes inherit a frozen start-up heap


@worker_shutdown.connect
def _remove_metrics_dir(**_: object) -> None:
    remove_multiprocess_dir()


@worker_process_init.connect
def _open_connection(**_: object) -> None:
    store.close()  # never reuse a socket inherited from the parent
    try:
        store.connect()
    except TransientError as exc:
        log.warning("database not reachable at start, will connect on first chunk: %s", exc)
    tune_gc()


@worker_process_shutdown.connect
def _close_connection(**_: object) -> None:
    store.close()
    metrics.forget_process(os.getpid())


@app.task(name=TASK_NAME, bind=True, max_retries=None, acks_late=True, reject_on_worker_lost=True,
          soft_time_limit=TASK_SOFT_TIME_LIMIT_S, time_limit=TASK_TIME_LIMIT_S)
def ingest_chunk(self: Task[Any, Any], chunk_id: str, messages: Sequence[Sequence[object]]) -> None:
    started = time.monotonic()
    chunk = from_wire(chunk_id, messages)
    outcomes: list[Outcome] | None = None
    try:
        outcomes = process_chunk(chunk, settings.max_payload_bytes)
        result = store.write(chunk.id, outcomes)
    except TransientError as exc:
        retry_or_give_up(self, chunk, outcomes, exc)
        return
    except SoftTimeLimitExceeded:
        store.abandon()  # it may be waiting in the middle of a statement
        retry_or_give_up(self, chunk, outcomes, timed_out(self))
        return
    record(outcomes, result)
    forget(chunk.id)
    stored = sum(n for table, n in result.rows.items() if table != "ingest_errors")
    metrics.CHUNK_SECONDS.observe(time.monotonic() - started)
    log.info(
        "chunk %s: messages=%d rows=%d dead=%d in %.1f ms",
        chunk.id, len(chunk.messages), stored, len(result.dead), (time.monotonic() - started) * 1000,
    )


def timed_out(task: Task[Any, Any]) -> TaskTimedOut:
    # The limit a sender set for this task (its `timelimit` header: hard, soft), else ours.
    soft = (task.request.timelimit or (None, None))[1] or TASK_SOFT_TIME_LIMIT_S
    return TaskTimedOut(f"the task ran past its soft time limit of {soft} s")


def retry_or_give_up(
    task: Task[Any, Any], chunk: Chunk, outcomes: list[Outcome] | None, exc: TransientError
) -> None:
    """Retry with backoff while the policy allows; then dead-letter the chunk as retries_exhausted."""
    retries = task.request.retries
    if not policy.exhausted(retries):
        countdown = policy.countdown(retries, random.random())
        metrics.RETRIES.inc()
        log.warning("chunk %s: %s; retry %d in %.1f s", chunk.id, exc, retries + 1, countdown)
        requeue_later(task, chunk, countdown, exc)
    detail = f"gave up after {retries} retries; last error: {exc}"
    try:
        result = store.dead_letter(chunk.id, give_up(chunk, outcomes, detail))
    except TransientError as dlq_exc:
        # Not even the DLQ can be written: keep the chunk in Redis rather than drop it.
        log.error("chunk %s: retries exhausted and DLQ unreachable (%s); kept in the queue", chunk.id, dlq_exc)
        requeue_later(task, chunk, policy.cap_s, dlq_exc)
    record([], result)
    forget(chunk.id)
    log.error("chunk %s: retries exhausted, %d messages dead-lettered: %s", chunk.id, len(chunk.messages), exc)


def forget(chunk_id: str) -> None:
    """The chunk's outcome is committed: the listener need not send it again."""
    try:
        ledger.forget(chunk_id)
    except (RedisError, OSError) as exc:
        # Harmless: the listener may send the chunk again later, and it adds nothing then.
        log.warning("chunk %s: stored, but not taken off the ledger: %s", chunk_id, exc)


def record(outcomes: Sequence[Outcome], result: WriteResult) -> None:
    """Count what a committed transaction stored (rejects the database refused are in `dead`)."""
    dead = {r.seq for r in result.dead}
    stored = [o for o in outcomes if isinstance(o, Accepted) and o.seq not in dead]
    for kind in ("telem", "ack", "event"):
        n = sum(1 for o in stored if o.kind == kind)
        if n:
            metrics.MESSAGES.labels(kind).inc(n)
    metrics.POINTS.inc(sum(len(o.measures) for o in stored))
    for reason in {r.reason for r in result.dead}:
        metrics.ERRORS.labels(reason).inc(sum(1 for r in result.dead if r.reason == reason))
    for table, n in result.rows.items():
        metrics.ROWS.labels(table).inc(n)
    now = time.time()
    metrics.observe_latencies(
        (o.device_ts for o in stored if o.device_ts is not None), (o.received_at for o in stored), now
    )


def requeue_later(task: Task[Any, Any], chunk: Chunk, countdown: float, exc: Exception) -> NoReturn:
    try:
        raise task.retry(countdown=countdown, exc=exc, max_retries=None,
                         argsrepr=args_summary(chunk.id, chunk.messages))
    except Reject as rejected:
        # Celery rejects *without* requeue when it cannot publish the retry: requeue instead.
        raise Reject(rejected.reason, requeue=True) from exc


def give_up(chunk: Chunk, outcomes: list[Outcome] | None, detail: str) -> list[Rejected]:
    """Every message of the chunk as a dead letter: invalid ones keep their own reason.

    Without outcomes (the time limit struck while they were being made) each message's tenant
    is taken from its topic, and every message is retries_exhausted.
    """
    if outcomes is None:
        return [Rejected(seq, tenant_of(m.topic), m.topic, m.payload, RetriesExhausted.reason, detail)
                for seq, m in enumerate(chunk.messages)]
    return [
        o if isinstance(o, Rejected)
        else Rejected(o.seq, o.tenant, o.topic, o.payload, RetriesExhausted.reason, detail)
        for o in outcomes
    ]


def tenant_of(topic: str) -> str | None:
    try:
        return parse_topic(topic).tenant
    except PermanentError:
        return None


@app.task(name=PURGE_TASK)
def purge_dlq() -> int:
    removed = purge_dead_letters(settings.database_url, settings.dlq_retention_days)
    log.info("dlq purge: removed=%d older than %d days", removed, settings.dlq_retention_days)
    return removed


# No time limit, unlike a chunk's task: a first run over a large backlog may take long, but each
# batch is its own short transaction, and a run that is stopped leaves the rest to the next one.
@app.task(name=RETENTION_TASK)
def purge_old_telemetry() -> int:
    days = settings.telemetry_retention_days
    if days == 0:
        log.info("telemetry retention: off (TELEMETRY_RETENTION_DAYS=0)")
        return 0
    purged = purge_telemetry(settings.database_url, days)
    log.info("telemetry retention: dropped %d chunks, deleted %d rows in %d batches, older than %d days",
             purged.chunks, purged.rows, purged.batches, days)
    return purged.rows

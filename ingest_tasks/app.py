"""The Celery app and its configuration, shared by the workers, beat, Flower and the listener.

Reliability settings are chosen on purpose: late acks and reject-on-worker-lost (safe because
every write is idempotent) so a killed pool process loses nothing; prefetch 1 so a dead worker
holds at most one chunk per process; a visibility timeout longer than any task plus its retry
countdown, after which Redis hands an unacknowledged chunk to another worker.

Flower (`celery -A ingest_tasks flower`) takes its own options from `FLOWER_*` variables, which it
reads after loading this app; `set_flower_defaults` fills in the project's defaults there.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.schedules import crontab

from ingest_tasks.envelope import COMPRESSION, QUEUE, TASK_NAME, check_compression
from ingest_tasks.settings import Settings

PURGE_TASK = "ingest_tasks.purge_dlq"
# Flower keeps this many tasks in memory (its own default, 100000, holds a lot of 800-message
# chunk arguments); older ones are dropped, the counters on its /metrics keep counting.
FLOWER_MAX_TASKS = 10_000


def set_flower_defaults(settings: Settings) -> None:
    """Defaults for Flower's own `FLOWER_*` variables; an operator's value always wins.

    FLOWER_BASIC_AUTH is copied from a `.env` file too, since Flower reads only the environment.
    """
    os.environ.setdefault("FLOWER_MAX_TASKS", str(FLOWER_MAX_TASKS))
    if settings.flower_basic_auth:
        os.environ.setdefault("FLOWER_BASIC_AUTH", settings.flower_basic_auth)


def redis_transport_options(visibility_timeout_s: int) -> dict[str, int]:
    """The visibility timeout, and a sweep for timed-out chunks often enough to honour it.

    kombu looks for unacknowledged messages older than the timeout only every
    `unacked_restore_interval * unacked_restore_throttle` seconds (10 * 10 by default), so a chunk
    held by a killed worker would come back up to 100 s after its timeout. One sweep (a single
    ZRANGE on Redis) every tenth of the timeout, at most every 10 s, keeps that delay small.

    Each sweep holds a lock in Redis that expires after `unacked_mutex_expire` (300 s by
    default). A worker killed while it holds the lock, or Redis stopping before the release,
    leaves it behind, and no worker sweeps until it expires (celery/kombu#1816): so it expires
    after a tenth of the timeout too, at least 5 s. A sweep that outlives it is still safe:
    kombu restores each message in a WATCH transaction, so two sweeps never restore one twice.
    """
    interval = max(1, min(10, visibility_timeout_s // 10))
    return {
        "visibility_timeout": visibility_timeout_s,
        "unacked_restore_interval": interval,
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": max(5, visibility_timeout_s // 10),
    }


def create_app(settings: Settings) -> Celery:
    set_flower_defaults(settings)
    check_compression()
    app = Celery("ingest_tasks", broker=settings.celery_broker_url)
    app.conf.update(
        task_serializer="msgpack",  # binary-safe payloads, compact on the wire
        accept_content=["msgpack", "json"],
        task_compression=COMPRESSION,  # chunks through Redis at a tenth of their size (envelope.py)
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        task_routes={TASK_NAME: {"queue": QUEUE}, PURGE_TASK: {"queue": QUEUE}},
        broker_transport_options=redis_transport_options(settings.visibility_timeout_s),
        broker_connection_retry_on_startup=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
        beat_schedule={
            "purge-dlq-daily": {"task": PURGE_TASK, "schedule": crontab(hour=3, minute=17)},
        },
    )
    # Remote-control messages (inspect, ping) in JSON, not the task serializer: monitors such as
    # celery-exporter ship without msgpack and stop at the first reply they cannot decode.
    app.control.mailbox.serializer = "json"
    return app

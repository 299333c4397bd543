"""The Celery app and its configuration, shared by the workers, beat, Flower and the listener.

Reliability settings are chosen on purpose: late acks and reject-on-worker-lost (safe because
every write is idempotent) so a killed pool process loses nothing; prefetch 1 so a dead worker
holds at most one chunk per process; a visibility timeout longer than any task plus its retry
countdown, after which Redis hands an unacknowledged chunk to another worker.

Nothing waits forever on Redis: every connection to it (the broker's, and the ledger's client in
tasks.py) has TCP keepalives and socket timeouts (`redis_socket_options`), and a chunk's task has
a soft time limit, which the task turns into a retry, and a hard one above it that ends its pool
process; both are well under the default visibility timeout (600 s).

Flower (`celery -A ingest_tasks flower`) takes its own options from `FLOWER_*` variables, which it
reads after loading this app; `set_flower_defaults` fills in the project's defaults there.
"""

from __future__ import annotations

import os
import socket

from celery import Celery
from celery.schedules import crontab

from ingest_tasks.envelope import COMPRESSION, QUEUE, TASK_NAME, check_compression
from ingest_tasks.settings import Settings

PURGE_TASK = "ingest_tasks.purge_dlq"
RETENTION_TASK = "ingest_tasks.purge_telemetry"
# Flower keeps this many tasks in memory (its own default, 100000, holds a lot of 800-message
# chunk arguments); older ones are dropped, the counters on its /metrics keep counting.
FLOWER_MAX_TASKS = 10_000
# A chunk is stored in well under a second. The soft limit is twice the statement timeout
# (store.STATEMENT_TIMEOUT_S), so a slow statement fails with its own error first; it catches what
# no other timeout does (a socket that hangs with keepalives still answered). The task then cancels
# its statement and retries the chunk; the hard limit, 30 s later, ends a pool process that hangs
# even in that. Late acks keep both safe: a chunk whose task died is sent again (the ledger).
TASK_SOFT_TIME_LIMIT_S = 120
TASK_TIME_LIMIT_S = 150
# Redis answers every command we send within milliseconds, but a blocking read with no timeout
# waits forever on a broker that vanished without closing the connection. 30 s leaves room for a
# Redis paused by its own disk (an AOF fsync); BRPOP's server-side timeout (1 s) stays below it.
REDIS_SOCKET_TIMEOUT_S = 30
REDIS_CONNECT_TIMEOUT_S = 5
REDIS_KEEPALIVE_IDLE_S = 30
REDIS_KEEPALIVE_INTERVAL_S = 10
REDIS_KEEPALIVE_COUNT = 3


def set_flower_defaults(settings: Settings) -> None:
    """Defaults for Flower's own `FLOWER_*` variables; an operator's value always wins.

    FLOWER_BASIC_AUTH is copied from a `.env` file or from FLOWER_BASIC_AUTH_FILE too, since Flower
    reads only the environment; the file variable then goes, or settings read again in this
    environment would find both set.
    """
    os.environ.setdefault("FLOWER_MAX_TASKS", str(FLOWER_MAX_TASKS))
    if settings.flower_basic_auth and "FLOWER_BASIC_AUTH" not in os.environ:
        os.environ["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth
        os.environ.pop("FLOWER_BASIC_AUTH_FILE", None)


def redis_socket_options() -> dict[str, object]:
    """Timeouts and TCP keepalives for a redis-py client (and kombu's, which passes them on)."""
    probes = {"TCP_KEEPIDLE": REDIS_KEEPALIVE_IDLE_S, "TCP_KEEPINTVL": REDIS_KEEPALIVE_INTERVAL_S,
              "TCP_KEEPCNT": REDIS_KEEPALIVE_COUNT}
    return {
        "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
        # The option names exist on Linux (the image); elsewhere the system's own probe timing stays.
        "socket_keepalive_options": {getattr(socket, k): v for k, v in probes.items() if hasattr(socket, k)},
    }


def redis_transport_options(visibility_timeout_s: int) -> dict[str, object]:
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
        **redis_socket_options(),
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
        task_routes={TASK_NAME: {"queue": QUEUE}, PURGE_TASK: {"queue": QUEUE}, RETENTION_TASK: {"queue": QUEUE}},
        broker_transport_options=redis_transport_options(settings.visibility_timeout_s),
        broker_connection_retry_on_startup=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
        beat_schedule={
            "purge-dlq-daily": {"task": PURGE_TASK, "schedule": crontab(hour=3, minute=17)},
            # Always scheduled; the task does nothing while TELEMETRY_RETENTION_DAYS is 0.
            "purge-telemetry-daily": {"task": RETENTION_TASK, "schedule": crontab(hour=3, minute=47)},
        },
    )
    # Remote-control messages (inspect, ping) in JSON, not the task serializer: monitors such as
    # celery-exporter ship without msgpack and stop at the first reply they cannot decode.
    app.control.mailbox.serializer = "json"
    return app

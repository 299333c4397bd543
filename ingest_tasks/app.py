"""The Celery app and its configuration, shared by the workers, beat, Flower and the listener.

Reliability settings are chosen on purpose: late acks and reject-on-worker-lost (safe because
every write is idempotent) so a killed pool process loses nothing; prefetch 1 so a dead worker
holds at most one chunk per process; a visibility timeout longer than any task plus its retry
countdown, after which Redis hands an unacknowledged chunk to another worker.
"""

from __future__ import annotations

from celery import Celery
from celery.schedules import crontab

from ingest_tasks.envelope import QUEUE, TASK_NAME
from ingest_tasks.settings import Settings

PURGE_TASK = "ingest_tasks.purge_dlq"


def create_app(settings: Settings) -> Celery:
    app = Celery("ingest_tasks", broker=settings.celery_broker_url)
    app.conf.update(
        task_serializer="msgpack",  # binary-safe payloads, compact on the wire
        accept_content=["msgpack", "json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        task_routes={TASK_NAME: {"queue": QUEUE}, PURGE_TASK: {"queue": QUEUE}},
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
        beat_schedule={
            "purge-dlq-daily": {"task": PURGE_TASK, "schedule": crontab(hour=3, minute=17)},
        },
    )
    return app

"""Chunks a dead consumer held, or lost on the way to it, are stored all the same.

Two ways a worker SIGKILLed at the wrong moment leaves a chunk: held unacknowledged (kombu hands
it out again after the visibility timeout, even past a stale restore lock), or taken off the
queue and not yet recorded as held (the listener's ledger sends it again).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import redis

from ingest_tasks.app import create_app
from ingest_tasks.envelope import QUEUE, TASK_NAME
from ingest_tasks.ledger import SENT
from ingest_tasks.settings import Settings
from tests.support import (
    REDIS_HOST,
    ROOT,
    VENV_BIN,
    count,
    publisher,
    service_env,
    start_listener,
    start_worker,
    unique,
    wait_until,
)

pytestmark = pytest.mark.integration

VISIBILITY_S = 10
RESEND_AFTER_S = 5

# Takes the chunk off the queue without acknowledging it, takes the lock of kombu's sweep for
# timed-out chunks the way a worker with our settings does, and dies without a goodbye: as a
# worker SIGKILLed mid-sweep with a chunk in hand leaves Redis.
DIE_HOLDING_A_CHUNK_AND_THE_SWEEP_LOCK = """
import os
from kombu.transport.redis import Mutex
from ingest_tasks.app import create_app
from ingest_tasks.settings import load_settings
app = create_app(load_settings())
with app.connection_for_read() as conn:
    message = conn.SimpleQueue("ingest", accept=["msgpack"]).get(timeout=10)
    channel = conn.default_channel
    lock = Mutex(channel.client, channel.unacked_mutex_key, channel.unacked_mutex_expire)
    lock.__enter__()  # kept referenced: a collected generator would release the lock
    print("holding", message.delivery_tag, "and the lock for", channel.unacked_mutex_expire, "s", flush=True)
    os._exit(0)
"""


def test_a_chunk_held_by_a_dead_consumer_is_stored_even_if_it_died_holding_the_restore_lock(
    database_url: str, redis_db: int, log_dir: Path
) -> None:
    tenant = unique("t")
    env = service_env(database_url, redis_db, unique("ts"), CELERY_VISIBILITY_TIMEOUT=str(VISIBILITY_S))
    app = create_app(Settings(CELERY_BROKER_URL=env["CELERY_BROKER_URL"]))
    payload = b'{"schema":"v1","ts":"2025-10-07T15:30:00Z","points":[{"name":"a","t":"float","v":1}]}'
    app.send_task(TASK_NAME, args=(unique("chunk-"), [[f"traksense/{tenant}/s/d/telem", payload, 1.0]]),
                  queue=QUEUE)

    died = subprocess.run([str(VENV_BIN / "python"), "-c", DIE_HOLDING_A_CHUNK_AND_THE_SWEEP_LOCK],
                          check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert "holding" in died.stdout, died.stderr
    broker = redis.Redis(host=REDIS_HOST, port=6379, db=redis_db)
    assert broker.llen(QUEUE) == 0 and broker.hlen("unacked") == 1
    assert broker.exists("unacked_mutex")

    held_since = time.monotonic()
    worker = start_worker(env, log_dir)
    try:
        wait_until(lambda: count(database_url, "ts_measure", tenant) == 1, 60, interval=0.2,
                   what="the held chunk's row")
    finally:
        worker.stop()
    # Not before the visibility timeout (the chunk might still be in the hands of a live worker),
    # and long before kombu's default lock expiry of 300 s would let a sweep run again.
    assert VISIBILITY_S <= time.monotonic() - held_since < 60
    assert broker.hlen("unacked") == 0


def test_a_chunk_taken_off_the_queue_by_a_consumer_that_died_before_holding_it_is_sent_again(
    database_url: str, redis_db: int, log_dir: Path
) -> None:
    prefix, tenant = unique("ts"), unique("t")
    env = service_env(database_url, redis_db, prefix, INGEST_RESEND_AFTER_S=str(RESEND_AFTER_S))
    broker = redis.Redis(host=REDIS_HOST, port=6379, db=redis_db)
    listener = start_listener(env, log_dir)
    try:
        with publisher() as pub:
            pub.publish(f"{prefix}/{tenant}/s/d/telem",
                        b'{"schema":"v1","ts":"2025-10-07T15:30:00Z","points":[{"name":"a","t":"float","v":1}]}')
        wait_until(lambda: broker.llen(QUEUE) == 1, what="the chunk in the queue")
        # What kombu's BRPOP does before it records the chunk as unacknowledged: a worker
        # SIGKILLed right then leaves the chunk nowhere in Redis but in the ledger.
        assert broker.brpop([QUEUE], timeout=5) is not None
        assert broker.hlen("unacked") == 0 and broker.zcard(SENT) == 1
        worker = start_worker(env, log_dir)
        try:
            wait_until(lambda: count(database_url, "ts_measure", tenant) == 1, RESEND_AFTER_S + 30,
                       interval=0.2, what="the lost chunk's row")
            wait_until(lambda: broker.zcard(SENT) == 0, what="the stored chunk off the ledger")
        finally:
            worker.stop()
    finally:
        listener.stop()
    assert "lost between Redis and a worker" in listener.log()

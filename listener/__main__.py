"""`python -m listener`: subscribe, chunk, enqueue; stop cleanly on SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

import redis
from prometheus_client import start_http_server

from ingest_tasks.app import create_app
from ingest_tasks.envelope import QUEUE
from ingest_tasks.gc_tuning import tune_gc
from ingest_tasks.logs import configure_logging
from ingest_tasks.settings import Settings, load_settings
from listener.backoff import REDIS_RETRY
from listener.backpressure import QueueGate, QueueLimits, QueueLoad
from listener.chunker import Chunker, ChunkPolicy
from listener.keepalive import keepalive_options
from listener.ledger import SentChunks, StagedMessages
from listener.mqtt import Delivery, Subscriber, SubscriberConfig
from listener.read_hold import HoldPolicy
from listener.sender import ChunkSender
from listener.service import Listener
from listener.session import RedisSessionMemory
from listener.sweeper import LostChunkSweeper, SweepPolicy

log = logging.getLogger("listener")

INFLIGHT_CHUNKS = 4  # unacknowledged messages the broker may send us, in chunks; also the most we hold


def max_buffered(settings: Settings) -> int:
    return settings.batch_size * INFLIGHT_CHUNKS


def max_buffered_bytes(settings: Settings) -> int:
    return settings.batch_bytes * INFLIGHT_CHUNKS


def subscriber_config(settings: Settings) -> SubscriberConfig:
    return SubscriberConfig(
        address=settings.mqtt,
        client_id=settings.mqtt_client_id,
        topics=tuple(settings.topic_filters),
        qos=settings.mqtt_qos,
        shared_group=settings.mqtt_shared_group,
        session_expiry_s=settings.mqtt_session_expiry_s,
        receive_maximum=max_buffered(settings),
        ca_file=settings.mqtt_ca_file,
        max_packet_bytes=settings.mqtt_max_packet_bytes,
        url_file=settings.mqtt_url_file,
        protocol=settings.mqtt_protocol,
    )


def queue_client(url: str) -> redis.Redis:
    """The listener's own Redis client (queue depth, memory, ledger): short timeouts, TCP keepalive."""
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2, socket_keepalive=True,
                                socket_keepalive_options=keepalive_options())


def queue_load_reader(client: redis.Redis) -> Callable[[], QueueLoad]:
    def read() -> QueueLoad:
        pipe = client.pipeline(transaction=False)  # one round trip for both
        pipe.llen(QUEUE)
        pipe.info("memory")
        depth, memory = pipe.execute()
        return QueueLoad(int(depth), int(memory["used_memory"]))

    return read


def build(settings: Settings) -> Listener:
    """The listener's steps, each given its policy and the clock, composed by `Listener`."""
    config = subscriber_config(settings)
    client = queue_client(settings.celery_broker_url)
    memory = RedisSessionMemory(client, config.address.host, config.address.port, config.client_id)

    def subscriber(on_delivery: Callable[[Delivery], None]) -> Subscriber:
        return Subscriber(config, on_delivery, clock=time.time, memory=memory)

    stopping = threading.Event()
    staged = StagedMessages(client, config.client_id)
    ledger = SentChunks(client, staged.key)
    sender = ChunkSender(create_app(settings), ledger, REDIS_RETRY, wall_clock=time.time, sleep=time.sleep,
                         stopping=stopping.is_set)
    sweeper = LostChunkSweeper(ledger, sender.enqueue, SweepPolicy(settings.resend_after_s), REDIS_RETRY,
                               wall_clock=time.time, now=time.monotonic())
    gate = QueueGate(queue_load_reader(client), QueueLimits(settings.max_queue_chunks, settings.max_queue_bytes))
    chunker: Chunker[Delivery] = Chunker(ChunkPolicy(settings.batch_size, settings.batch_ms / 1000,
                                                     settings.batch_bytes))
    hold = HoldPolicy(max_buffered(settings), max_buffered_bytes(settings))
    return Listener(subscriber, chunker, gate, sender, sweeper, hold=hold, stopping=stopping, clock=time.monotonic,
                    staged=staged)


def main() -> int:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    listener = build(settings)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, flushing and stopping", signal.Signals(signum).name)
        listener.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
        log.info("listener metrics on :%d/metrics", settings.metrics_port)
    tune_gc()
    listener.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m listener`: subscribe, chunk, enqueue; stop cleanly on SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

import redis
from prometheus_client import start_http_server
from redis.exceptions import RedisError

from ingest_tasks.app import create_app
from ingest_tasks.envelope import QUEUE
from ingest_tasks.gc_tuning import tune_gc
from ingest_tasks.ledger import Ledger
from ingest_tasks.logs import configure_logging
from ingest_tasks.settings import Settings, load_settings
from listener.backpressure import QueueGate, QueueLimits, QueueLoad
from listener.chunker import Chunker, ChunkPolicy
from listener.keepalive import keepalive_options
from listener.mqtt import Delivery, Subscriber, SubscriberConfig
from listener.service import Listener

log = logging.getLogger("listener")

SESSION_KEY_PREFIX = "ingest:mqtt-session:"  # + host:port:client id
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


class RedisSessionMemory:
    """Whether a listener with this client id ever connected to this broker, kept in Redis (one key, no expiry).

    Lets the first connect of a process tell a first start (no session yet: fine) from a session
    the broker discarded while the listener was away (an alarm).
    """

    def __init__(self, client: redis.Redis, config: SubscriberConfig) -> None:
        self._client = client
        self.key = f"{SESSION_KEY_PREFIX}{config.address.host}:{config.address.port}:{config.client_id}"

    def recall(self) -> bool | None:
        try:
            return bool(self._client.exists(self.key))
        except (RedisError, OSError) as exc:
            log.warning("cannot tell from Redis whether the MQTT session existed before: %s", exc)
            return None

    def remember(self) -> bool:
        try:
            self._client.set(self.key, int(time.time()))
            return True
        except (RedisError, OSError) as exc:
            log.warning("cannot record the MQTT session in Redis (tried again at the next connect): %s", exc)
            return False


def build(settings: Settings) -> Listener:
    config = subscriber_config(settings)
    client = queue_client(settings.celery_broker_url)
    memory = RedisSessionMemory(client, config)

    def subscriber(on_delivery: Callable[[Delivery], None]) -> Subscriber:
        return Subscriber(config, on_delivery, clock=time.time, memory=memory)

    gate = QueueGate(queue_load_reader(client), QueueLimits(settings.max_queue_chunks, settings.max_queue_bytes))
    policy = ChunkPolicy(settings.batch_size, settings.batch_ms / 1000, settings.batch_bytes)
    return Listener(create_app(settings), subscriber, Chunker(policy), gate,
                    ledger=Ledger(client), resend_after_s=settings.resend_after_s,
                    max_buffered=max_buffered(settings), max_buffered_bytes=max_buffered_bytes(settings))


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

"""The listener on brokers nobody here wrote: ejabberd's mod_mqtt (MQTT 5) and RabbitMQ's MQTT plugin
(MQTT 3.1.1), each a test-owned node (`scripts/brokers.sh`).

Mosquitto runs the same cases in test_listener.py and test_mqtt_protocols.py. These are the ones
where brokers differ: what they do to topics and payloads, when they redeliver, whether a session
survives a SIGKILL, how they flood a listener that stops reading, and whether they drop one whose
reads are held. ejabberd keeps one QoS 1 message in flight per session whatever Receive Maximum
says, so a chunk there holds one message: the tests that move many messages send chunks early
(a small INGEST_BATCH_MS) to stay fast.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingest_tasks.settings import MqttAddress
from listener import mqtt as mqtt_module
from listener.mqtt import READ_SIZE, Delivery, Subscriber, SubscriberConfig
from tests.brokers import MATRIX, BrokerListener, broker_listener, device_publisher
from tests.support import (
    TEST_SESSION_EXPIRY_S,
    count,
    free_port,
    queued_chunks,
    scrape,
    service_env,
    start_listener,
    start_worker,
    unique,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("broker_listener", MATRIX, indirect=True)]
__all__ = ["broker_listener"]  # the fixture, imported to be used here

START = datetime(2025, 1, 1, tzinfo=UTC)


def telemetry(i: int) -> dict[str, object]:
    """Message i: one point at its own timestamp, so every message is one row."""
    ts = (START + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")
    return {"schema": "v1", "ts": ts, "points": [{"name": "n", "t": "int", "v": i}]}


def received(redis_url: str, prefix: str) -> list[bytes]:
    """The payloads queued in Redis under this test's topic prefix (another run may share the index)."""
    return [m[1] for _, messages in queued_chunks(redis_url) for m in messages if m[0].startswith(f"{prefix}/")]


def test_payload_bytes_and_topic_travel_unchanged(
    database_url: str, redis_db: int, log_dir: Path, broker_listener: BrokerListener
) -> None:
    # RabbitMQ 3.10 maps an MQTT topic to an AMQP routing key and back ('/' <-> '.'); a '.' inside
    # a level becomes a level separator on the way, so identifiers here have none (see the README).
    prefix = unique("ts")
    env = service_env(database_url, redis_db, prefix, INGEST_BATCH_MS="50", **broker_listener.env)
    listener = start_listener(env, log_dir)
    payload = bytes(range(256)) * 3
    topic = f"{prefix}/acme/site_1/dev-ü 2/telem"
    try:
        with device_publisher(broker_listener.broker) as pub:
            pub.publish(topic, payload)
        got = wait_until(lambda: received(env["CELERY_BROKER_URL"], prefix), what="the message")
    finally:
        assert listener.stop() == 0
    assert got == [payload]
    assert [m[0] for _, messages in queued_chunks(env["CELERY_BROKER_URL"]) for m in messages
            if m[1] == payload] == [topic]


def test_messages_are_acknowledged_only_after_redis_accepts_them(
    database_url: str, redis_db: int, log_dir: Path, broker_listener: BrokerListener
) -> None:
    prefix = unique("ts")
    env = service_env(database_url, redis_db, prefix, INGEST_BATCH_MS="50", **broker_listener.env)
    first = start_listener({**env, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}, log_dir, name="listener-no-redis")
    with device_publisher(broker_listener.broker) as pub:
        for i in range(5):
            pub.publish(f"{prefix}/t/s/d/telem", f"m{i}".encode())
    first.wait_for_log("Redis unreachable")
    first.kill_group()  # nothing was acknowledged: the broker delivers all five again
    second = start_listener(env, log_dir, name="listener-redis")
    try:
        def all_five() -> list[bytes] | None:
            got = received(env["CELERY_BROKER_URL"], prefix)
            return got if len(got) >= 5 else None

        got = wait_until(all_five, what="the redelivered messages")
    finally:
        assert second.stop() == 0
    assert sorted(got) == [f"m{i}".encode() for i in range(5)]
    assert "mqtt connected (session present=True)" in second.log()


def test_a_listener_killed_while_messages_flow_resumes_its_session_and_stores_each_message_once(
    database_url: str, redis_db: int, log_dir: Path, broker_listener: BrokerListener
) -> None:
    # The second number is published while the listener is away. ejabberd's one message in flight
    # costs the listener's loop a wake-up per message (~70 ms): fewer there.
    messages, away = (60, 20) if broker_listener.broker.name == "ejabberd" else (600, 200)
    prefix, tenant = unique("ts"), unique("t")
    topic = f"{prefix}/{tenant}/s/d1/telem"
    env = service_env(database_url, redis_db, prefix, INGEST_BATCH_MS="10", **broker_listener.env)
    worker = start_worker(env, log_dir)
    first = start_listener(env, log_dir, name="listener-killed")
    try:
        with device_publisher(broker_listener.broker) as pub:
            def publish(numbers: range) -> None:
                for i in numbers:
                    pub.publish(topic, telemetry(i))

            flowing = threading.Thread(target=publish, args=(range(messages - away),))
            flowing.start()
            wait_until(lambda: count(database_url, "ts_measure", tenant) > 0, what="the first rows")
            first.kill_group()  # SIGKILL while messages are delivered, chunked and acknowledged
            flowing.join(60)
            publish(range(messages - away, messages))  # queued in the session while it is away
        second = start_listener(env, log_dir, name="listener-restarted")
        try:
            wait_until(lambda: count(database_url, "ts_measure", tenant) >= messages, 60, what="every row")
        finally:
            assert second.stop() == 0
        assert count(database_url, "ts_measure", tenant) == messages
        assert "mqtt connected (session present=True)" in second.log()
        assert "mqtt session lost" not in first.log() + second.log()
    finally:
        first.kill_group()
        worker.stop()


def test_a_flood_past_what_the_listener_holds_waits_in_the_broker(
    database_url: str, redis_db: int, log_dir: Path, broker_listener: BrokerListener
) -> None:
    # QoS 0 messages are capped by neither Receive Maximum nor ejabberd's one in flight nor
    # RabbitMQ's prefetch, and with Redis unreachable nothing goes out: without holding its reads
    # the listener would take in all 3,000.
    prefix = unique("ts")
    port = free_port()
    env = service_env(database_url, redis_db, prefix, INGEST_BATCH_SIZE="50", INGEST_BATCH_MS="50",
                      METRICS_PORT=str(port), CELERY_BROKER_URL="redis://127.0.0.1:1/0", **broker_listener.env)
    limit = 50 * 4  # INGEST_BATCH_SIZE x listener.__main__.INFLIGHT_CHUNKS
    payload = bytes(2048)
    per_read = READ_SIZE // len(payload) + 1  # what one socket read can hold past the limit
    listener = start_listener(env, log_dir)
    try:
        with device_publisher(broker_listener.broker) as pub:
            for _ in range(3000):
                pub.publish(f"{prefix}/t/s/d/telem", payload, qos=0)
        listener.wait_for_log("reading from the broker pauses")

        def buffered() -> float:
            return scrape(port)["ingest_listener_buffered_messages"]

        held = wait_until(lambda: buffered() if buffered() > limit else None, what="the held buffer")
        time.sleep(0.5)
        assert limit < held <= limit + per_read
        assert buffered() == held  # nothing more was read meanwhile
        assert listener.log().count("mqtt connected (") == 1
    finally:
        listener.kill_group()  # a clean stop would retry the unreachable Redis for seconds first


def test_a_held_subscriber_reads_nothing_until_released_and_keeps_its_connection(
    monkeypatch: pytest.MonkeyPatch, broker_listener: BrokerListener
) -> None:
    monkeypatch.setattr(mqtt_module, "KEEPALIVE_S", 1)  # a hold of 3 s outlasts keep-alive twice
    broker, prefix = broker_listener.broker, unique("ts")
    user, password = broker.listener_login or (None, None)
    config = SubscriberConfig(MqttAddress(broker.host, broker.port, False, user, password), broker_listener.client_id,
                              (f"{prefix}/#",), 1, "", TEST_SESSION_EXPIRY_S, 1000, protocol=broker_listener.protocol)
    got: list[Delivery] = []
    hold = True

    def take(delivery: Delivery) -> None:
        got.append(delivery)
        if not hold:
            subscriber.ack(delivery)  # ejabberd sends the next QoS 1 message only after this one's PUBACK

    subscriber = Subscriber(config, take, clock=time.time)
    subscriber.hold_reads_while(lambda: hold)
    subscriber.start()
    try:
        wait_until(lambda: subscriber.connected.is_set() or None, what="the connection")
        time.sleep(0.3)  # for the broker to take the SUBSCRIBE (its SUBACK waits unread, with the rest)
        with device_publisher(broker) as pub:
            for i in range(20):
                pub.publish(f"{prefix}/x", f"m{i}".encode())
        generation = subscriber.generation
        time.sleep(3)
        assert got == []  # the 20 wait in the socket and the broker
        assert subscriber.connected.is_set() and subscriber.generation == generation  # never dropped
        hold = False
        subscriber.resume_reads()
        wait_until(lambda: len(got) >= 20 or None, what="the 20 messages after the hold")
        assert [d.payload for d in got] == [f"m{i}".encode() for i in range(20)]
    finally:
        subscriber.stop()


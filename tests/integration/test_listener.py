"""The listener seen from outside: what it puts in Redis, when, and what it acknowledges.

The tests that take `listener_mqtt` run twice, with MQTT 5 and with MQTT 3.1.1.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path
from typing import Literal

import orjson
import pytest
import redis

from ingest_tasks.settings import MqttAddress
from listener import mqtt as mqtt_module
from listener.__main__ import queue_client
from listener.keepalive import KEEPALIVE_IDLE_S
from listener.mqtt import READ_SIZE, Delivery, Subscriber, SubscriberConfig
from tests.integration.protocols import PROTOCOLS, ListenerMqtt, forget_session, listener_mqtt
from tests.support import (
    MQTT_HOST,
    MQTT_PORT,
    TEST_SESSION_EXPIRY_S,
    free_port,
    publisher,
    queued_chunks,
    scrape,
    service_env,
    start_listener,
    unique,
    wait_until,
)

pytestmark = pytest.mark.integration
__all__ = ["listener_mqtt"]  # the fixture, imported to be used here


def test_a_full_chunk_is_sent_at_batch_size_and_the_rest_at_shutdown(
    database_url: str, redis_db: int, log_dir: Path, listener_mqtt: ListenerMqtt
) -> None:
    prefix = unique("ts")
    env = service_env(database_url, redis_db, prefix, INGEST_BATCH_SIZE="5", INGEST_BATCH_MS="600000",
                      **listener_mqtt.env)
    redis_url = env["CELERY_BROKER_URL"]
    listener = start_listener(env, log_dir)
    try:
        with publisher() as pub:
            for i in range(12):
                pub.publish(f"{prefix}/t/s/d/telem", f"m{i}".encode())
        chunks = wait_until(lambda: queued_chunks(redis_url) if len(queued_chunks(redis_url)) >= 2 else None,
                            what="two full chunks")
        assert [[m[1] for m in messages] for _, messages in chunks] == [
            [f"m{i}".encode() for i in range(5)], [f"m{i}".encode() for i in range(5, 10)]]
    finally:
        assert listener.stop() == 0
    chunks = queued_chunks(redis_url)
    assert [m[1] for m in chunks[-1][1]] == [b"m10", b"m11"]
    assert len({chunk_id for chunk_id, _ in chunks}) == 3


def test_a_partial_chunk_is_sent_when_its_oldest_message_is_batch_ms_old(
    database_url: str, redis_db: int, log_dir: Path, listener_mqtt: ListenerMqtt
) -> None:
    prefix = unique("ts")
    env = service_env(database_url, redis_db, prefix, INGEST_BATCH_SIZE="1000", INGEST_BATCH_MS="400",
                      **listener_mqtt.env)
    redis_url = env["CELERY_BROKER_URL"]
    listener = start_listener(env, log_dir)
    try:
        with publisher() as pub:
            started = time.monotonic()
            for i in range(3):
                pub.publish(f"{prefix}/t/s/d/telem", f"m{i}".encode())
            chunks = wait_until(lambda: queued_chunks(redis_url), what="the age-triggered chunk")
            waited = time.monotonic() - started
        assert [[m[1] for m in messages] for _, messages in chunks] == [[b"m0", b"m1", b"m2"]]
        assert waited >= 0.4  # it was not sent before the oldest message was batch-ms old
    finally:
        listener.stop()


def test_payload_bytes_and_topic_travel_unchanged(
    database_url: str, redis_db: int, log_dir: Path, listener_mqtt: ListenerMqtt
) -> None:
    prefix = unique("ts")
    env = service_env(database_url, redis_db, prefix, INGEST_BATCH_MS="50", **listener_mqtt.env)
    listener = start_listener(env, log_dir)
    payload = bytes(range(256)) * 3
    topic = f"{prefix}/acme/site-1/dev-ü/telem"
    try:
        with publisher() as pub:
            pub.publish(topic, payload)
        chunks = wait_until(lambda: queued_chunks(env["CELERY_BROKER_URL"]), what="the chunk")
    finally:
        listener.stop()
    (_, messages), = chunks
    assert [(m[0], m[1]) for m in messages] == [(topic, payload)]
    assert abs(messages[0][2] - time.time()) < 60  # received_at is a wall-clock stamp


def test_a_chunk_travels_through_redis_compressed(database_url: str, redis_db: int, log_dir: Path) -> None:
    prefix = unique("ts")
    env = service_env(database_url, redis_db, prefix, INGEST_BATCH_SIZE="200", INGEST_BATCH_MS="600000")
    listener = start_listener(env, log_dir)
    payloads = [orjson.dumps({"schema": "v1", "ts": f"2025-10-07T15:30:{i % 60:02d}Z", "points": [
        {"name": f"p{n}", "t": "float", "v": i * 0.37 + n, "u": "C"} for n in range(5)]}) for i in range(200)]
    try:
        with publisher() as pub:
            for i, payload in enumerate(payloads):
                pub.publish(f"{prefix}/t{i % 3}/s/d{i % 20}/telem", payload)
        wait_until(lambda: queued_chunks(env["CELERY_BROKER_URL"]), what="the chunk")
    finally:
        listener.stop()
    (stored,) = redis.Redis.from_url(env["CELERY_BROKER_URL"]).lrange("ingest", 0, -1)
    envelope = orjson.loads(stored)
    assert envelope["headers"]["compression"] == "application/zstd"
    assert len(stored) * 4 < sum(map(len, payloads))  # JSON, base64 and all: a quarter of the payloads
    ((_, messages),) = queued_chunks(env["CELERY_BROKER_URL"])
    assert [m[1] for m in messages] == payloads


def test_messages_are_acknowledged_only_after_redis_accepts_them(
    database_url: str, redis_db: int, log_dir: Path, listener_mqtt: ListenerMqtt
) -> None:
    prefix = unique("ts")
    # First life: Redis unreachable, so nothing may be acknowledged. Then SIGKILL.
    env = service_env(database_url, redis_db, prefix, INGEST_BATCH_MS="50", **listener_mqtt.env)
    no_redis = {**env, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}
    first = start_listener(no_redis, log_dir, name="listener-no-redis")
    with publisher() as pub:
        for i in range(5):
            pub.publish(f"{prefix}/t/s/d/telem", f"m{i}".encode())
    first.wait_for_log("Redis unreachable")
    first.signal(signal.SIGKILL)
    first.popen.wait(10)
    # Second life, same client id: the broker delivers again what was never acknowledged.
    second = start_listener(env, log_dir, name="listener-redis")
    try:
        def all_five() -> list[bytes] | None:
            got = [m[1] for _, messages in queued_chunks(env["CELERY_BROKER_URL"]) for m in messages]
            return got if len(got) >= 5 else None

        got = wait_until(all_five, what="the redelivered messages")
    finally:
        second.stop()
    assert sorted(got) == [f"m{i}".encode() for i in range(5)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_held_subscriber_reads_nothing_until_released_and_keeps_its_connection(
    monkeypatch: pytest.MonkeyPatch, protocol: Literal["5", "3.1.1"],
) -> None:
    monkeypatch.setattr(mqtt_module, "KEEPALIVE_S", 1)  # a hold of 3 s outlasts keep-alive twice
    prefix = unique("ts")
    config = SubscriberConfig(MqttAddress(MQTT_HOST, MQTT_PORT, False, None, None), unique("test-hold-"),
                              (f"{prefix}/#",), 1, "", TEST_SESSION_EXPIRY_S, 1000, protocol=protocol)
    got: list[Delivery] = []
    hold = True
    subscriber = Subscriber(config, got.append, clock=time.time)
    subscriber.hold_reads_while(lambda: hold)
    subscriber.start()
    try:
        wait_until(lambda: subscriber.connected.is_set() or None, what="the connection")
        time.sleep(0.3)  # for the broker to take the SUBSCRIBE (its SUBACK waits unread, with the rest)
        with publisher() as pub:
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
        subscriber.ack_all(got)
    finally:
        subscriber.stop()
        forget_session(config.client_id, protocol)


def test_a_flood_past_receive_maximum_waits_in_the_broker_not_in_the_listener(
    database_url: str, redis_db: int, log_dir: Path, listener_mqtt: ListenerMqtt
) -> None:
    # QoS 0 messages are not capped by Receive Maximum, and with Redis unreachable nothing goes
    # out: without holding its reads the listener would take in all 3,000.
    prefix = unique("ts")
    port = free_port()
    env = service_env(database_url, redis_db, prefix, INGEST_BATCH_SIZE="50", INGEST_BATCH_MS="50",
                      METRICS_PORT=str(port), CELERY_BROKER_URL="redis://127.0.0.1:1/0", **listener_mqtt.env)
    limit = 50 * 4  # INGEST_BATCH_SIZE x listener.__main__.INFLIGHT_CHUNKS
    payload = bytes(2048)
    per_read = READ_SIZE // len(payload) + 1  # what one socket read can hold past the limit
    listener = start_listener(env, log_dir)
    try:
        with publisher() as pub:
            for _ in range(3000):
                pub.publish(f"{prefix}/t/s/d/telem", payload, qos=0)
        listener.wait_for_log("reading from the broker pauses")

        def buffered() -> float:
            return scrape(port)["ingest_listener_buffered_messages"]

        held = wait_until(lambda: buffered() if buffered() > limit else None, what="the held buffer")
        time.sleep(0.5)
        assert limit < held <= limit + per_read
        assert buffered() == held  # nothing more was read meanwhile
    finally:
        listener.kill_group()  # a clean stop would retry the unreachable Redis for seconds first


def test_a_chunk_is_sent_once_its_messages_bytes_reach_batch_bytes(
    database_url: str, redis_db: int, log_dir: Path
) -> None:
    prefix = unique("ts")
    env = service_env(database_url, redis_db, prefix, INGEST_BATCH_SIZE="1000", INGEST_BATCH_MS="600000",
                      INGEST_BATCH_BYTES="10000")
    redis_url = env["CELERY_BROKER_URL"]
    topic = f"{prefix}/t/s/d/telem"
    payloads = [bytes([i]) * 3000 for i in range(5)]  # 3,000 + topic bytes each: three fit in 10,000
    listener = start_listener(env, log_dir)
    try:
        with publisher() as pub:
            for payload in payloads:
                pub.publish(topic, payload)
        chunks = wait_until(lambda: queued_chunks(redis_url), what="the chunk full by bytes")
        assert [[m[1] for m in messages] for _, messages in chunks] == [payloads[:3]]
    finally:
        assert listener.stop() == 0
    assert [m[1] for m in queued_chunks(redis_url)[-1][1]] == payloads[3:]  # the rest, at shutdown


def test_a_flood_of_large_payloads_past_four_chunks_of_bytes_waits_in_the_broker(
    database_url: str, redis_db: int, log_dir: Path
) -> None:
    # Few, large messages: 4 x INGEST_BATCH_SIZE is never reached, 4 x INGEST_BATCH_BYTES is.
    prefix = unique("ts")
    port = free_port()
    env = service_env(database_url, redis_db, prefix, INGEST_BATCH_SIZE="800", INGEST_BATCH_MS="50",
                      INGEST_BATCH_BYTES="50000", METRICS_PORT=str(port), CELERY_BROKER_URL="redis://127.0.0.1:1/0")
    limit = 50_000 * 4  # INGEST_BATCH_BYTES x listener.__main__.INFLIGHT_CHUNKS
    topic = f"{prefix}/t/s/d/telem"
    payload = bytes(20_000)
    per_read = READ_SIZE + len(payload) + len(topic)  # one read can complete a message begun before it
    listener = start_listener(env, log_dir)
    try:
        with publisher() as pub:
            for _ in range(200):  # 4 MB
                pub.publish(topic, payload, qos=0)
        listener.wait_for_log("reading from the broker pauses")

        def buffered() -> float:
            return scrape(port)["ingest_listener_buffered_bytes"]

        def settled() -> float | None:
            # The first chunk, taken out to be sent (and retried: Redis is unreachable), no longer
            # counts, so reads may go on once after the hold began: wait until nothing more is read.
            before = buffered()
            time.sleep(0.5)
            return before if before > limit and buffered() == before else None

        held = wait_until(settled, what="the held buffer to stop growing")
        assert limit < held <= limit + per_read
        assert scrape(port)["ingest_listener_buffered_messages"] < 800  # the count bound was never the cause
    finally:
        listener.kill_group()


def test_while_redis_uses_more_memory_than_allowed_nothing_is_enqueued_or_acknowledged(
    database_url: str, redis_db: int, log_dir: Path
) -> None:
    prefix = unique("ts")
    client_id = unique("test-listener-")
    port = free_port()
    env = service_env(database_url, redis_db, prefix, MQTT_CLIENT_ID=client_id, INGEST_BATCH_MS="50",
                      METRICS_PORT=str(port))
    redis_url = env["CELERY_BROKER_URL"]
    first = start_listener({**env, "INGEST_MAX_QUEUE_BYTES": "1"}, log_dir, name="listener-redis-full")
    first.wait_for_log("Redis memory in use")
    assert "reached INGEST_MAX_QUEUE_BYTES 1: holding back" in first.log()
    with publisher() as pub:
        for i in range(5):
            pub.publish(f"{prefix}/t/s/d/telem", f"m{i}".encode())
    wait_until(lambda: scrape(port)["ingest_listener_buffered_messages"] == 5 or None, what="5 messages held")
    assert scrape(port)["ingest_redis_memory_bytes"] > 1
    assert queued_chunks(redis_url) == []
    first.kill_group()  # nothing was acknowledged: the broker delivers all five again
    second = start_listener(env, log_dir, name="listener-redis-room")
    try:
        def all_five() -> list[bytes] | None:
            got = [m[1] for _, messages in queued_chunks(redis_url) for m in messages]
            return got if len(got) >= 5 else None

        got = wait_until(all_five, what="the redelivered messages")
    finally:
        second.stop()
    assert sorted(got) == [f"m{i}".encode() for i in range(5)]


def test_the_broker_drops_for_the_listener_a_packet_over_its_maximum_and_the_connection_stays() -> None:
    prefix = unique("ts")
    config = SubscriberConfig(MqttAddress(MQTT_HOST, MQTT_PORT, False, None, None), unique("test-max-packet-"),
                              (f"{prefix}/#",), 1, "", TEST_SESSION_EXPIRY_S, 1000, max_packet_bytes=100_000)
    got: list[Delivery] = []
    subscriber = Subscriber(config, got.append, clock=time.time)
    subscriber.start()
    try:
        wait_until(lambda: subscriber.connected.is_set() or None, what="the connection")
        with publisher() as pub:
            def subscribed() -> bool:
                pub.publish(f"{prefix}/ready", b"?")
                return any(d.topic == f"{prefix}/ready" for d in got)

            wait_until(subscribed, interval=0.2, what="the subscription")
            pub.publish(f"{prefix}/x", bytes(99_000))  # a packet within 100,000 bytes
            pub.publish(f"{prefix}/x", bytes(100_000))  # a packet over it: the broker never sends it
            pub.publish(f"{prefix}/x", b"after")
        wait_until(lambda: any(d.payload == b"after" for d in got) or None, what="the message after")
        subscriber.ack_all(got)
        assert [len(d.payload) for d in got if d.topic == f"{prefix}/x"] == [99_000, 5]
        assert subscriber.generation == 1  # never disconnected: our framing never saw the large packet
    finally:
        subscriber.stop()


def test_the_listeners_connections_to_mqtt_and_redis_use_tcp_keepalive(redis_db: int) -> None:
    config = SubscriberConfig(MqttAddress(MQTT_HOST, MQTT_PORT, False, None, None), unique("test-keepalive-"),
                              (f"{unique('ts')}/#",), 1, "", TEST_SESSION_EXPIRY_S, 1000)
    subscriber = Subscriber(config, lambda _d: None, clock=time.time)
    subscriber.start()
    client = queue_client(f"redis://127.0.0.1:6379/{redis_db}")
    try:
        wait_until(lambda: subscriber.connected.is_set() or None, what="the connection")
        assert client.ping()
        connection = client.connection_pool.get_connection()
        try:
            sockets = {"mqtt": subscriber.client.socket(), "redis": connection._sock}
            for name, sock in sockets.items():
                assert isinstance(sock, socket.socket), name
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1, name
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE_S, name
        finally:
            client.connection_pool.release(connection)
    finally:
        subscriber.stop()
        client.close()

"""The listener's MQTT session on a real Mosquitto, with MQTT 5 and 3.1.1: it survives a SIGKILL
with nothing lost or doubled, and losing it (or being disconnected by the broker) is an error
with a metric."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from listener.session import session_key
from tests.faults.services import accepts_connections, scratch_dir
from tests.integration.protocols import PROTOCOLS, ListenerMqtt, forget_session, listener_mqtt
from tests.support import (
    MQTT_HOST,
    MQTT_PORT,
    Process,
    Publisher,
    count,
    free_port,
    publisher,
    queued_chunks,
    scrape,
    service_env,
    start_listener,
    start_worker,
    unique,
    wait_until,
)

pytestmark = pytest.mark.integration
__all__ = ["listener_mqtt"]  # the fixture, imported to be used here

SESSION_LOST = "mqtt session lost"
LOST_TOTAL = "ingest_mqtt_session_lost_total"
START = datetime(2025, 1, 1, tzinfo=UTC)
MESSAGES, AWAY = 900, 300  # the second number published while the listener is away


def telemetry(i: int) -> dict[str, object]:
    """Message i: one point at its own timestamp, so every message is one row."""
    ts = (START + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")
    return {"schema": "v1", "ts": ts, "points": [{"name": "n", "t": "int", "v": i}]}


def publish_range(pub: Publisher, topic: str, numbers: range) -> None:
    for i in numbers:
        pub.publish(topic, telemetry(i))


def assert_session_remembered(env: dict[str, str]) -> None:
    """The first listener's record that its client id had a session (what makes the next start expect one)."""
    key = session_key(MQTT_HOST, MQTT_PORT, env["MQTT_CLIENT_ID"])
    assert redis.Redis.from_url(env["CELERY_BROKER_URL"]).exists(key), (
        f"{key} is not in Redis: did another test run flush this database index?")


def test_a_listener_killed_while_messages_flow_resumes_its_session_and_stores_each_message_once(
    database_url: str, redis_db: int, log_dir: Path, listener_mqtt: ListenerMqtt,
) -> None:
    prefix, tenant = unique("ts"), unique("t")
    topic = f"{prefix}/{tenant}/s/d1/telem"
    env = service_env(database_url, redis_db, prefix, **listener_mqtt.env)
    worker = start_worker(env, log_dir)
    first = start_listener(env, log_dir, name="listener-killed")
    try:
        # Fewer than the shared Mosquitto queues for a session (max_queued_messages, 1000 by
        # default): past that it would drop messages for the listener, session or not.
        with publisher() as pub:
            flowing = threading.Thread(target=publish_range, args=(pub, topic, range(MESSAGES - AWAY)))
            flowing.start()
            wait_until(lambda: count(database_url, "ts_measure", tenant) > 0, what="the first rows")
            first.kill_group()  # SIGKILL while messages are delivered, chunked and acknowledged
            flowing.join(60)
            publish_range(pub, topic, range(MESSAGES - AWAY, MESSAGES))  # queued in the session while it is away
        second = start_listener(env, log_dir, name="listener-restarted")
        try:
            wait_until(lambda: count(database_url, "ts_measure", tenant) >= MESSAGES, what="every row")
        finally:
            assert second.stop() == 0
        assert count(database_url, "ts_measure", tenant) == MESSAGES
        assert "mqtt connected (session present=True)" in second.log()
        assert SESSION_LOST not in first.log() + second.log()
    finally:
        first.kill_group()
        worker.stop()


def test_a_session_that_expired_while_the_listener_was_away_is_an_error_and_counted(
    database_url: str, redis_db: int, log_dir: Path,
) -> None:
    client_id = unique("test-listener-")
    ports = free_port(), free_port()
    env = service_env(database_url, redis_db, unique("ts"), MQTT_CLIENT_ID=client_id, MQTT_SESSION_EXPIRY="1")
    first = start_listener({**env, "METRICS_PORT": str(ports[0])}, log_dir, name="listener-before")
    assert scrape(ports[0])[LOST_TOTAL] == 0  # a first start has no session to lose
    assert first.stop() == 0
    # Mosquitto ends the session 1 s after the disconnect. Nothing shows it from outside without
    # replacing the session (a connect with this client id would), so wait past it.
    time.sleep(3)
    assert_session_remembered(env)
    second = start_listener({**env, "METRICS_PORT": str(ports[1])}, log_dir, name="listener-after")
    try:
        second.wait_for_log(SESSION_LOST)
        assert scrape(ports[1])[LOST_TOTAL] == 1
        assert f"the broker had no session for client id {client_id} where one was expected" in second.log()
        assert "messages queued for it while it was away or unacknowledged may have been lost" in second.log()
    finally:
        assert second.stop() == 0
    assert SESSION_LOST not in first.log()


def test_a_session_the_broker_discarded_while_the_listener_was_away_is_an_error_and_counted(
    database_url: str, redis_db: int, log_dir: Path, listener_mqtt: ListenerMqtt,
) -> None:
    port = free_port()
    env = service_env(database_url, redis_db, unique("ts"), **listener_mqtt.env, METRICS_PORT=str(port))
    first = start_listener(env, log_dir, name="listener-before")
    assert first.stop() == 0
    assert forget_session(listener_mqtt.client_id, listener_mqtt.protocol)  # it was there, and now is not
    assert_session_remembered(env)
    second = start_listener(env, log_dir, name="listener-after")
    try:
        second.wait_for_log(SESSION_LOST)
        assert scrape(port)[LOST_TOTAL] == 1
    finally:
        assert second.stop() == 0
    assert SESSION_LOST not in first.log()


# --- a broker that disconnects the listener with a reason code -----------------------------------

DYNSEC_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"


@dataclass
class DynsecBroker:
    """A Mosquitto of this test's own with the dynamic security plugin: its admin can disable a client,
    which Mosquitto 2.0 does by sending it DISCONNECT 0x98 (administrative action)."""

    port: int
    proc: Process

    def ctrl(self, *args: str) -> None:
        argv = ["mosquitto_ctrl", "-u", "admin", "-P", "admin-pw", "-p", str(self.port), "dynsec", *args]
        subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture
def dynsec_broker(tmp_path: Path) -> Iterator[DynsecBroker]:
    directory = scratch_dir("protocol-dynsec-", owner="mosquitto")
    config = directory / "dynamic-security.json"
    subprocess.run(["mosquitto_ctrl", "dynsec", "init", str(config), "admin"], input="admin-pw\nadmin-pw\n",
                   text=True, check=True, capture_output=True, timeout=30)
    shutil.chown(config, "mosquitto", "mosquitto")
    port = free_port()
    (directory / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\nplugin {DYNSEC_PLUGIN}\nplugin_opt_config_file {config}\n")
    proc = Process(unique("dynsec-mosquitto-"), ["mosquitto", "-c", str(directory / "mosquitto.conf")], {}, tmp_path)
    try:
        wait_until(lambda: accepts_connections(port) or proc.popen.poll() is not None, 15, what="mosquitto")
        broker = DynsecBroker(port, proc)
        broker.ctrl("createClient", "ingest", "-p", "ingest-pw")
        broker.ctrl("createRole", "reader")
        broker.ctrl("addRoleACL", "reader", "subscribePattern", "#", "allow")
        broker.ctrl("addClientRole", "ingest", "reader")
        broker.ctrl("createClient", "other", "-p", "other-pw")
        yield broker
    finally:
        proc.kill_group()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_broker_disconnect_with_a_reason_code_and_the_session_lost_meanwhile_are_errors_and_counted(
    database_url: str, redis_db: int, log_dir: Path, dynsec_broker: DynsecBroker, protocol: str,
) -> None:
    port, client_id = free_port(), unique("test-listener-")
    env = service_env(database_url, redis_db, unique("ts"), MQTT_CLIENT_ID=client_id, METRICS_PORT=str(port),
                      MQTT_URL=f"mqtt://ingest:ingest-pw@127.0.0.1:{dynsec_broker.port}", MQTT_PROTOCOL=protocol)
    listener = start_listener(env, log_dir)
    try:
        dynsec_broker.ctrl("disableClient", "ingest")  # Mosquitto disconnects it, and refuses it after
        if protocol == "5":  # a DISCONNECT packet with reason 0x98
            listener.wait_for_log("mqtt the broker disconnected the listener")
            assert scrape(port)['ingest_mqtt_disconnects_total{reason="administrative_action"}'] == 1
            assert "(0x98)" in listener.log()
        else:  # 3.1.1 has no DISCONNECT from the server: the socket is closed
            listener.wait_for_log("reconnecting with backoff")
            assert not [k for k in scrape(port) if k.startswith("ingest_mqtt_disconnects_total")]
        # While it is away, another client takes its id with a clean session: the session is gone.
        assert forget_session(client_id, protocol, port=dynsec_broker.port, username="other", password="other-pw")
        dynsec_broker.ctrl("enableClient", "ingest")
        listener.wait_for_log(SESSION_LOST)  # in the same process: every reconnect expects the session
        assert scrape(port)[LOST_TOTAL] == 1
    finally:
        assert listener.stop() == 0
    assert listener.log().count("mqtt connected (session present=") == 2


def test_with_3_1_1_a_packet_over_mqtt_max_packet_bytes_still_reaches_the_listener_without_a_reconnect(
    database_url: str, redis_db: int, log_dir: Path, listener_mqtt: ListenerMqtt,
) -> None:
    # MQTT 5: the broker drops the large packet for the listener (its announced Maximum Packet
    # Size). MQTT 3.1.1 has no way to say it: the broker sends it, and refusing it would drop the
    # connection and fetch it again at every reconnect, holding back every message behind it.
    prefix = unique("ts")
    env = service_env(database_url, redis_db, prefix, **listener_mqtt.env, INGEST_BATCH_MS="50",
                      INGEST_MAX_PAYLOAD_BYTES="1024", MQTT_MAX_PACKET_BYTES="2048")
    topic = f"{prefix}/t/s/d/telem"
    listener = start_listener(env, log_dir)
    try:
        with publisher() as pub:
            pub.publish(topic, bytes(5000))
            pub.publish(topic, b"after")

        def received() -> list[bytes] | None:
            got = [m[1] for _, messages in queued_chunks(env["CELERY_BROKER_URL"]) for m in messages]
            return got if b"after" in got else None

        got = wait_until(received, what="the message after the large one")
    finally:
        assert listener.stop() == 0
    assert got == ([b"after"] if listener_mqtt.protocol == "5" else [bytes(5000), b"after"])
    assert listener.log().count("mqtt connected (") == 1

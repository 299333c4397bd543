"""The MQTT brokers of the tests' broker matrix, and a listener's place on one of them, as fixtures.

Mosquitto is the machine's shared broker (anonymous, 1883). ejabberd's mod_mqtt and RabbitMQ's
MQTT plugin are test-owned nodes that `scripts/brokers.sh` installs, starts or reuses; a broker
that cannot be had fails the test with the script's reason (never a skip). Both require a login:
the listener is `ingest`, the publishers `device`.

A test takes `broker_listener` and chooses its brokers with
`@pytest.mark.parametrize("broker_listener", MATRIX, indirect=True)` (or `EVERY_BROKER`).
"""

from __future__ import annotations

import functools
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.integration.protocols import forget_session
from tests.support import MQTT_HOST, MQTT_PORT, ROOT, unique

Protocol = Literal["5", "3.1.1"]
Login = tuple[str, str]
SCRIPT = ROOT / "scripts" / "brokers.sh"


@dataclass(frozen=True)
class Broker:
    name: str
    host: str
    port: int
    listener_login: Login | None = None
    device_login: Login | None = None

    def url(self) -> str:
        """MQTT_URL for a listener on this broker."""
        login = f"{self.listener_login[0]}:{self.listener_login[1]}@" if self.listener_login else ""
        return f"mqtt://{login}{self.host}:{self.port}"


MOSQUITTO = Broker("mosquitto", MQTT_HOST, MQTT_PORT)
TEST_OWNED = ("ejabberd", "rabbitmq")


@functools.cache
def running_broker(name: str) -> Broker:
    """The broker called `name`, started (or reused) once per test session."""
    if name == MOSQUITTO.name:
        return MOSQUITTO
    assert name in TEST_OWNED, f"unknown broker {name!r}"
    done = subprocess.run([str(SCRIPT), name], capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{SCRIPT.name} {name} failed: {done.stderr.strip()}")
    host, port = done.stdout.split()
    return Broker(name, host, int(port), ("ingest", "ingest-pw"), ("device", "device-pw"))


@dataclass(frozen=True)
class BrokerListener:
    """A listener's broker, protocol and fresh client id: settings to pass to `service_env`."""

    broker: Broker
    protocol: Protocol
    client_id: str

    @property
    def env(self) -> dict[str, str]:
        return {"MQTT_URL": self.broker.url(), "MQTT_PROTOCOL": self.protocol, "MQTT_CLIENT_ID": self.client_id}

    def forget_session(self) -> bool:
        """Make the broker discard the listener's session; whether it had one."""
        user, password = self.broker.listener_login or (None, None)
        return forget_session(self.client_id, self.protocol, self.broker.host, self.broker.port, user, password)


def matrix_param(name: str, protocol: Protocol) -> Any:
    return pytest.param((name, protocol), id=f"{name}-mqtt{protocol.replace('.', '')}")


MATRIX = [matrix_param("ejabberd", "5"), matrix_param("rabbitmq", "3.1.1")]  # RabbitMQ 3.10 speaks only 3.1.1
EVERY_BROKER = [matrix_param("mosquitto", "5"), matrix_param("mosquitto", "3.1.1"), *MATRIX]


@pytest.fixture
def broker_listener(request: pytest.FixtureRequest) -> Iterator[BrokerListener]:
    """The listener's place on the broker and protocol of this test's parameter, forgotten afterwards."""
    name, protocol = request.param
    chosen = BrokerListener(running_broker(name), protocol, unique("test-listener-"))
    yield chosen
    chosen.forget_session()


class DevicePublisher:
    """A device stand-in on any broker: paho with MQTT 3.1.1 (which every broker here speaks), QoS 1
    waiting for each PUBACK unless told otherwise."""

    def __init__(self, broker: Broker) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("test-pub-"),
                                  protocol=mqtt.MQTTv311, clean_session=True)
        if broker.device_login is not None:
            self.client.username_pw_set(*broker.device_login)
        self.client.connect(broker.host, broker.port, 30)
        self.client.loop_start()
        deadline = time.monotonic() + 10
        while not self.client.is_connected():
            assert time.monotonic() < deadline, f"the publisher could not connect to {broker.name}"
            time.sleep(0.01)

    def publish(self, topic: str, payload: bytes | dict[str, Any], qos: int = 1) -> None:
        data = orjson.dumps(payload) if isinstance(payload, dict) else payload
        info = self.client.publish(topic, data, qos=qos)
        info.wait_for_publish(10)  # QoS 1: its PUBACK; QoS 0: written to the socket
        assert info.is_published(), f"a message to {topic} was not published within 10 s"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def device_publisher(broker: Broker) -> Iterator[DevicePublisher]:
    pub = DevicePublisher(broker)
    try:
        yield pub
    finally:
        pub.close()

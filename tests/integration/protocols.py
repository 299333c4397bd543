"""The MQTT protocols the listener speaks, as a pytest fixture, and cleaning up the sessions it leaves.

A 3.1.1 session has no expiry: Mosquitto keeps one (and persists it) until a client connects
with the same id and clean_session=1. Every listener a test starts therefore has its session
forgotten afterwards, so test runs leave nothing on the shared broker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support import MQTT_HOST, MQTT_PORT, unique

PROTOCOLS = [pytest.param("5", id="mqtt5"), pytest.param("3.1.1", id="mqtt311")]


@dataclass(frozen=True)
class ListenerMqtt:
    """The protocol and client id of a test's listener: settings to pass to `service_env`."""

    protocol: str
    client_id: str

    @property
    def env(self) -> dict[str, str]:
        return {"MQTT_PROTOCOL": self.protocol, "MQTT_CLIENT_ID": self.client_id}


def forget_session(client_id: str, protocol: str, host: str = MQTT_HOST, port: int = MQTT_PORT,
                   username: str | None = None, password: str | None = None) -> bool:
    """Make the broker discard the session it keeps for `client_id`; whether it had one.

    The session is resumed once to see whether it is there (with MQTT 5, with an expiry of 0,
    which ends it at the disconnect); a 3.1.1 session is then ended by a clean-session connect.
    """
    login = (username, password)
    present = connect_once(client_id, protocol, False, host, port, login)
    if protocol != "5":
        connect_once(client_id, protocol, True, host, port, login)
    return present


def connect_once(client_id: str, protocol: str, clean: bool, host: str, port: int,
                 login: tuple[str | None, str | None]) -> bool:
    """Connect as `client_id`, and disconnect at once; whether the broker said session present."""
    v5 = protocol == "5"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         **({"protocol": mqtt.MQTTv5} if v5 else {"protocol": mqtt.MQTTv311, "clean_session": clean}))
    if login[0] is not None:
        client.username_pw_set(*login)
    if v5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        client.connect(host, port, 30, clean_start=clean, properties=props)
    else:
        client.connect(host, port, 30)
    present: list[bool] = []
    client.on_connect = lambda _c, _u, flags, _r, _p: present.append(bool(flags.session_present))
    deadline = time.monotonic() + 10
    while not present:
        assert time.monotonic() < deadline, f"no CONNACK for {client_id} within 10 s"
        client.loop(0.5)
    client.disconnect()
    return present[0]


@pytest.fixture(params=PROTOCOLS)
def listener_mqtt(request: pytest.FixtureRequest) -> Iterator[ListenerMqtt]:
    """A listener's protocol (each test runs with both) and a fresh client id, forgotten afterwards."""
    chosen = ListenerMqtt(str(request.param), unique("test-listener-"))
    yield chosen
    forget_session(chosen.client_id, chosen.protocol)

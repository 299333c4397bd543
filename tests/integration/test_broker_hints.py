"""What the listener says when a broker will not speak its protocol: RabbitMQ 3.10's MQTT plugin (a
test-owned node, `scripts/brokers.sh`) closes the socket on an MQTT 5 CONNECT without a word.
"""

from __future__ import annotations

import logging
import time

import pytest

from ingest_tasks.settings import MqttAddress
from listener.mqtt import Delivery, Subscriber, SubscriberConfig
from tests.brokers import running_broker
from tests.support import TEST_SESSION_EXPIRY_S, unique, wait_until

pytestmark = pytest.mark.integration

HINT = "set MQTT_PROTOCOL=3.1.1"


def subscriber_on_rabbitmq(protocol: str) -> Subscriber:
    broker = running_broker("rabbitmq")
    user, password = broker.listener_login or (None, None)
    config = SubscriberConfig(MqttAddress(broker.host, broker.port, False, user, password), unique("test-listener-"),
                              (f"{unique('ts')}/#",), 1, "", TEST_SESSION_EXPIRY_S, 100,
                              protocol=protocol)  # type: ignore[arg-type]

    def ignore(_: Delivery) -> None:
        raise AssertionError("nothing is published here")

    return Subscriber(config, ignore, clock=time.time)


def test_an_mqtt5_listener_on_a_311_only_broker_is_told_to_set_mqtt_protocol(
    caplog: pytest.LogCaptureFixture,
) -> None:
    subscriber = subscriber_on_rabbitmq("5")
    with caplog.at_level(logging.ERROR, logger="listener.mqtt"):
        subscriber.start()
        try:
            wait_until(lambda: HINT in caplog.text or None, 15, what="the MQTT_PROTOCOL hint")
            assert not subscriber.connected.is_set()
        finally:
            subscriber.stop()


def test_a_listener_that_was_answered_gets_no_protocol_hint_when_it_is_disconnected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    subscriber = subscriber_on_rabbitmq("3.1.1")
    with caplog.at_level(logging.INFO, logger="listener.mqtt"):
        subscriber.start()
        try:
            wait_until(lambda: subscriber.connected.is_set() or None, 15, what="the connection")
            subscriber.client.disconnect()  # a disconnect after the CONNACK: no hint
            wait_until(lambda: not subscriber.connected.is_set() or None, 15, what="the disconnect")
        finally:
            subscriber.stop()
    assert "mqtt connected (" in caplog.text and HINT not in caplog.text

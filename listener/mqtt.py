"""The MQTT side of the listener: a paho-mqtt 2.x client with a persistent session and manual acks.

Owns connecting (TLS, credentials, reconnect with backoff), subscribing (optionally as a shared
subscription) and handing each received message to a callback with what is needed to acknowledge
it later. Refuses to acknowledge anything by itself: PUBACK goes out only when the caller says the
message is safe.

Why these options: MQTT v5 with `clean_start=False` and a session-expiry interval keeps the
session (and the QoS 1 messages queued for it) across restarts; paho's default
`MQTT_CLEAN_START_FIRST_ONLY` would throw it away at every process start. `Receive Maximum` caps
how many unacknowledged messages the broker sends us, which bounds the listener's memory while
it waits for Redis.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest_tasks import metrics
from ingest_tasks.settings import MqttAddress

log = logging.getLogger(__name__)

KEEPALIVE_S = 30
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
RECEIVE_MAXIMUM_LIMIT = 65_535


@dataclass(frozen=True, slots=True)
class Delivery:
    """One received message and how to acknowledge it."""

    topic: str
    payload: bytes
    received_at: float  # wall clock, unix seconds
    mid: int
    qos: int
    generation: int  # which connection delivered it; a mid means nothing on another one


@dataclass(frozen=True)
class SubscriberConfig:
    address: MqttAddress
    client_id: str
    topics: tuple[str, ...]
    qos: int
    shared_group: str
    session_expiry_s: int
    receive_maximum: int
    ca_file: str = ""


def subscription_filters(topics: tuple[str, ...], shared_group: str) -> list[str]:
    return [f"$share/{shared_group}/{t}" if shared_group else t for t in topics]


class Subscriber:
    """A connected (and reconnecting) MQTT session that feeds `on_delivery`."""

    def __init__(self, config: SubscriberConfig, on_delivery: Callable[[Delivery], None],
                 clock: Callable[[], float]) -> None:
        self.config = config
        self._on_delivery = on_delivery
        self._clock = clock
        self.generation = 0
        self.session_present = False  # whether the broker kept our session at the last connect
        self.connected = threading.Event()
        self._stopping = False
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        c = self.config
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=c.client_id,
            protocol=mqtt.MQTTv5, manual_ack=True,
        )
        if c.address.username is not None:
            client.username_pw_set(c.address.username, c.address.password)
        if c.address.tls:
            client.tls_set(ca_certs=c.ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_subscribe = self._handle_subscribe
        client.on_message = self._handle_message
        return client

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.session_expiry_s
        props.ReceiveMaximum = min(RECEIVE_MAXIMUM_LIMIT, self.config.receive_maximum)
        a = self.config.address
        log.info("mqtt connecting to %s:%d as %s", a.host, a.port, self.config.client_id)
        self.client.connect_async(a.host, a.port, KEEPALIVE_S, clean_start=False, properties=props)
        self.client.loop_start()

    def stop(self) -> None:
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()

    def ack(self, delivery: Delivery) -> bool:
        """PUBACK one message, if the connection that delivered it is still the current one."""
        if delivery.qos == 0 or delivery.generation != self.generation:
            return False
        self.client.ack(delivery.mid, delivery.qos)
        return True

    def _handle_connect(self, client: mqtt.Client, _userdata: Any, flags: mqtt.ConnectFlags,
                        reason: ReasonCode, _props: Properties | None) -> None:
        if reason.is_failure:
            log.error("mqtt connect refused: %s", reason)
            return
        self.session_present = bool(flags.session_present)
        self.generation += 1
        filters = subscription_filters(self.config.topics, self.config.shared_group)
        log.info("mqtt connected (session present=%s); subscribing to %s at qos %d",
                 flags.session_present, ",".join(filters), self.config.qos)
        client.subscribe([(f, SubscribeOptions(qos=self.config.qos)) for f in filters])
        self.connected.set()
        metrics.MQTT_CONNECTED.set(1)

    def _handle_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: mqtt.DisconnectFlags,
                           reason: ReasonCode, _props: Properties | None) -> None:
        self.connected.clear()
        metrics.MQTT_CONNECTED.set(0)
        if self._stopping:
            log.info("mqtt disconnected: %s", reason)
        else:
            log.warning("mqtt disconnected: %s; reconnecting with backoff", reason)

    def _handle_subscribe(self, _client: mqtt.Client, _userdata: Any, mid: int,
                          reasons: list[ReasonCode], _props: Properties | None) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("mqtt subscription refused: %s", ", ".join(refused))
        else:
            log.info("mqtt subscribed (granted %s)", ",".join(str(r.value) for r in reasons))

    def _handle_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # brokers should refuse such topics; keep the message anyway
            topic = msg._topic.decode("utf-8", "replace")
        self._on_delivery(Delivery(topic, msg.payload, self._clock(), msg.mid, msg.qos, self.generation))

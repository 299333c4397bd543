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
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.client import PUBACK
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
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
_PUBACK = struct.Struct("!BBH")  # fixed header, remaining length 2, packet id: MQTT 3.1.1 and 5


READ_SIZE = 65_536  # bytes read from the broker's socket at a time


class BatchReadingClient(mqtt.Client):
    """paho's Client, reading the socket 64 KiB at a time and handling every buffered packet per wake-up.

    paho reads each packet with three or more recv calls and handles one packet per select();
    at thousands of messages a second that is most of the listener's CPU. The protocol handling
    stays paho's own: only where its bytes come from changes. (paho is pinned: this relies on
    `_sock_recv`, `_packet_read` and `_loop_rc_handle`.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_buffer = b""
        self._read_pos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._read_pos >= len(self._read_buffer):
            data = super()._sock_recv(READ_SIZE)  # BlockingIOError when nothing is there
            if not data:
                return data  # the connection closed
            self._read_buffer, self._read_pos = data, 0
        start = self._read_pos
        self._read_pos = min(len(self._read_buffer), start + bufsize)
        return self._read_buffer[start:self._read_pos]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        # Packets already in our buffer would not wake select(): handle them now.
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None \
                and self._read_pos < len(self._read_buffer):
            rc = self._packet_read()
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            if rc > 0:
                return self._loop_rc_handle(rc)
        return rc

    def reconnect(self) -> MQTTErrorCode:
        self._read_buffer, self._read_pos = b"", 0  # bytes of the old connection mean nothing now
        try:
            return super().reconnect()
        except OSError as exc:
            # paho retries silently (no on_connect is called): a refused TCP connection or a TLS
            # certificate that does not verify would otherwise leave no trace in the log.
            log.warning("mqtt cannot connect to %s:%d: %s; retrying with backoff", self.host, self.port, exc)
            raise


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
        client = BatchReadingClient(
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

    def ack_all(self, deliveries: Sequence[Delivery]) -> int:
        """Acknowledge a chunk's messages of the current connection, in arrival order.

        paho's `ack` queues one packet per message and wakes its network thread for each; for
        the QoS 1 messages of a chunk this queues their PUBACKs as one write instead, the same
        bytes paho would send (`Client._send_command_with_mid`), at a fraction of the CPU.
        """
        current = [d for d in deliveries if d.qos > 0 and d.generation == self.generation]
        pubacks = [d.mid for d in current if d.qos == 1]
        if pubacks:
            self.client._packet_queue(PUBACK, b"".join(map(_PUBACK.pack, repeat(PUBACK), repeat(2), pubacks)), 0, 0)
        for d in current:
            if d.qos == 2:
                self.client.ack(d.mid, d.qos)
        return len(current)

    def _handle_connect(self, client: mqtt.Client, _userdata: Any, flags: mqtt.ConnectFlags,
                        reason: ReasonCode, _props: Properties | None) -> None:
        if reason.is_failure:
            hint = "; check the user name and password in MQTT_URL" if reason.value in (134, 135) else ""
            log.error("mqtt connect refused: %s%s", reason, hint)
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
        payload = cast(bytes, msg.payload)  # paho hands over bytes; its annotation also allows bytearray
        self._on_delivery(Delivery(topic, payload, self._clock(), msg.mid, msg.qos, self.generation))

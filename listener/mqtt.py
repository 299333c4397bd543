"""The MQTT side of the listener: a paho-mqtt 2.x client with a persistent session and manual acks.

Owns connecting (TLS, credentials, reconnect with backoff), subscribing (optionally as a shared
subscription) and handing each received message to a callback with what is needed to acknowledge
it later. Refuses to acknowledge anything by itself: PUBACK goes out only when the caller says the
message is safe. The bytes are read and cut into packets by our codec (`listener.mqtt_codec`);
paho keeps connecting, subscribing and keep-alive, through the hooks of `listener.paho_internals`.

Why these options: MQTT v5 with `clean_start=False` and a session-expiry interval (or MQTT 3.1.1
with `clean_session=False`) keeps the session (and the QoS 1 messages queued for it) across
restarts; paho's default `MQTT_CLEAN_START_FIRST_ONLY` would throw it away at every process
start. What a connect without the expected session, or the broker's DISCONNECT, means is
`listener.session`'s to say. In MQTT 5, `Receive Maximum` caps how many unacknowledged messages
the broker sends us, which bounds the listener's memory while it waits for Redis, and `Maximum
Packet Size` caps the size of one packet: the framing refuses a larger one rather than buffer it.
A broker does not always keep to Receive Maximum (Mosquitto 2.0.11 stops doing so once PUBACKs
flow, and QoS 0 messages have no such cap), so the caller can also hold reads: the socket is then
left unread and TCP makes the broker wait. MQTT 3.1.1 has neither property: the broker's own
limits apply, and the read hold alone keeps the listener's memory bounded.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest_tasks.settings import MQTT_PACKET_LIMIT, MqttAddress, SettingProblem, parse_mqtt_url, read_secret_file
from listener import metrics
from listener.keepalive import enable_keepalive
from listener.mqtt_codec import PUBACK, MalformedMqtt, PacketFramer, PublishHandler, encode_pubacks
from listener.paho_internals import HookedClient
from listener.session import SessionAlarm, SessionMemory

log = logging.getLogger(__name__)

__all__ = ["BatchReadingClient", "Delivery", "PublishHandler", "Subscriber", "SubscriberConfig"]

KEEPALIVE_S = 30
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
RECEIVE_MAXIMUM_LIMIT = 65_535
READ_SIZE = 65_536  # bytes read from the broker's socket at a time
READ_HOLD_POLL_S = 0.05  # while reads are held, how often paho's loop still writes and keeps alive


def _enable_keepalive(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
    if isinstance(sock, socket.socket):  # an SSLSocket too: the option applies to the TCP socket under it
        enable_keepalive(sock)


def _unset_handler(topic: bytes, payload: bytes, mid: int, qos: int) -> None:
    raise RuntimeError("BatchReadingClient.on_publish_packet is not set")


class BatchReadingClient(HookedClient):
    """paho's Client, reading the socket 64 KiB at a time and handling every packet it holds.

    Each wake-up reads what the socket has and frames the packets with `PacketFramer`: PUBLISH
    packets go straight to `on_publish_packet` (topic, payload, packet id, QoS), every other
    packet to paho's own handler. Acknowledging is the caller's: `manual_ack=True` is required.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not kwargs.get("manual_ack"):
            raise ValueError("BatchReadingClient needs manual_ack=True: it never acknowledges by itself")
        self.framer = PacketFramer(kwargs.get("protocol", mqtt.MQTTv311) == mqtt.MQTTv5, MQTT_PACKET_LIMIT)
        self.on_publish_packet: PublishHandler = _unset_handler
        # Asked before every read: True leaves the socket unread (see the module's doc).
        self.hold_reads: Callable[[], bool] = lambda: False
        self.reads_resumed = threading.Event()  # set to end a hold's wait early
        self.refresh_login: Callable[[], None] = lambda: None  # called before every (re)connect
        self.on_socket_open = _enable_keepalive

    @property
    def max_packet_bytes(self) -> int:
        """The Maximum Packet Size announced in CONNECT: a larger packet is a protocol error."""
        return self.framer.max_packet_bytes

    @max_packet_bytes.setter
    def max_packet_bytes(self, value: int) -> None:
        self.framer.max_packet_bytes = value

    def puback_all(self, mids: Sequence[int]) -> None:
        """PUBACK these QoS 1 messages in one write: the bytes paho's `ack` sends, one packet each."""
        if mids:
            self.send_raw(PUBACK, encode_pubacks(mids))

    def reconnect(self) -> MQTTErrorCode:
        self.framer.reset()  # the old connection's bytes
        self.refresh_login()
        try:
            return super().reconnect()
        except OSError as exc:
            # paho retries silently (no on_connect is called): a refused TCP connection or a TLS
            # certificate that does not verify would otherwise leave no trace in the log.
            log.warning("mqtt cannot connect to %s:%d: %s; retrying with backoff", self.host, self.port, exc)
            raise

    def read_available(self) -> MQTTErrorCode:
        if self.hold_reads():
            # Back to paho's loop without reading: it still sends PUBACKs and PINGREQs meanwhile.
            # The socket is readable (paho calls this only then), so the broker is there: say so
            # to paho's keep-alive, which would otherwise drop the connection for want of PINGRESP.
            self.note_bytes_received()
            self.reads_resumed.wait(READ_HOLD_POLL_S)
            self.reads_resumed.clear()
            return MQTTErrorCode.MQTT_ERR_AGAIN
        sock = self.socket()
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        return self.read_from(sock)

    def read_from(self, sock: Any) -> MQTTErrorCode:
        """One read of the socket, every packet it completes handled: SUCCESS, AGAIN when empty, or why not."""
        try:
            data = sock.recv(READ_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):  # before OSError: they are ones
            return MQTTErrorCode.MQTT_ERR_AGAIN
        except OSError as err:  # TimeoutError and ConnectionError included
            log.warning("mqtt failed to receive on the socket: %s", err)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if not data:
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        self.note_bytes_received()
        self._stopped_by = MQTTErrorCode.MQTT_ERR_SUCCESS
        try:
            self.framer.feed(data, self.on_publish_packet, self._to_paho)
        except MalformedMqtt as exc:
            log.error("mqtt received a malformed packet: %s; reconnecting", exc)
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        return self._stopped_by

    def _to_paho(self, command: int, body: bytes) -> bool:
        rc = self.handle_packet(command, body)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._stopped_by = rc
            return False
        return True


class Delivery(msgspec.Struct, frozen=True):  # one per message: cheaper to build than a dataclass
    """One received message and how to acknowledge it."""

    topic: str
    payload: bytes
    received_at: float  # wall clock, unix seconds
    mid: int
    qos: int
    generation: int  # which connection delivered it; a mid means nothing on another one
    size: int  # bytes of payload and topic: what the listener's byte bounds count


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
    max_packet_bytes: int = MQTT_PACKET_LIMIT
    url_file: str = ""  # MQTT_URL_FILE: its user name and password are read again at every (re)connect
    protocol: Literal["5", "3.1.1"] = "5"

    @property
    def v5(self) -> bool:
        return self.protocol == "5"

    @property
    def keeps_session(self) -> bool:
        """Whether the broker is asked to keep the session after a disconnect."""
        return self.session_expiry_s > 0 or not self.v5


def subscription_filters(topics: tuple[str, ...], shared_group: str) -> list[str]:
    return [f"$share/{shared_group}/{t}" if shared_group else t for t in topics]


class Subscriber:
    """A connected (and reconnecting) MQTT session that feeds `on_delivery`."""

    def __init__(self, config: SubscriberConfig, on_delivery: Callable[[Delivery], None],
                 clock: Callable[[], float], memory: SessionMemory | None = None) -> None:
        self.config = config
        self.session = SessionAlarm(config.client_id, config.keeps_session, memory)
        self._on_delivery = on_delivery
        self._clock = clock
        self.generation = 0
        self.session_present = False  # whether the broker kept our session at the last connect
        self.connected = threading.Event()
        self._stopping = False
        self._answered = False  # whether the broker answered this connection's CONNECT
        self.client = self._make_client()

    def _make_client(self) -> BatchReadingClient:
        c = self.config
        client = BatchReadingClient(
            CallbackAPIVersion.VERSION2, client_id=c.client_id, manual_ack=True,
            **({"protocol": mqtt.MQTTv5} if c.v5 else {"protocol": mqtt.MQTTv311, "clean_session": False}),
        )
        if c.address.username is not None:
            client.username_pw_set(c.address.username, c.address.password)
        if c.address.tls:
            client.tls_set(ca_certs=c.ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        # MQTT 3.1.1 cannot tell the broker our limit: it sends what its own max_packet_size lets
        # through, and refusing such a packet here would only fetch it again at every reconnect.
        client.max_packet_bytes = c.max_packet_bytes if c.v5 else MQTT_PACKET_LIMIT
        client.refresh_login = self._refresh_login
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_subscribe = self._handle_subscribe
        client.on_publish_packet = self._handle_publish_packet
        return client

    def _refresh_login(self) -> None:
        """Take the user name and password from MQTT_URL_FILE again, so that an operator rotates
        them by writing the file: the broker closes our session when the password changes, and
        the next connect uses the new one. A file that cannot be read keeps the last login."""
        if not self.config.url_file:
            return
        try:
            address = parse_mqtt_url(read_secret_file(self.config.url_file))
        except SettingProblem as exc:  # its words hold no part of the secret
            log.error("mqtt cannot read the login from MQTT_URL_FILE: %s; keeping the previous one", exc)
            return
        self.client.username_pw_set(address.username, address.password)

    def start(self) -> None:
        self.session.starting()
        a = self.config.address
        log.info("mqtt connecting to %s:%d as %s (MQTT %s)", a.host, a.port, self.config.client_id,
                 self.config.protocol)
        if self.config.v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.config.session_expiry_s
            props.ReceiveMaximum = min(RECEIVE_MAXIMUM_LIMIT, self.config.receive_maximum)
            props.MaximumPacketSize = self.config.max_packet_bytes  # the broker drops larger ones for us
            self.client.connect_async(a.host, a.port, KEEPALIVE_S, clean_start=False, properties=props)
        else:  # clean_session=False was set on the client
            self.client.connect_async(a.host, a.port, KEEPALIVE_S)
        self.client.loop_start()

    def stop(self) -> None:
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()

    def hold_reads_while(self, full: Callable[[], bool]) -> None:
        """Leave the socket unread while connected and `full()` (called on paho's network thread)."""
        self.client.hold_reads = lambda: self.connected.is_set() and full()

    def resume_reads(self) -> None:
        """Wake a held read now rather than at its next poll: something has gone out."""
        self.client.reads_resumed.set()

    def ack(self, delivery: Delivery) -> bool:
        """PUBACK one message, if the connection that delivered it is still the current one."""
        if delivery.qos == 0 or delivery.generation != self.generation:
            return False
        self.client.ack(delivery.mid, delivery.qos)
        return True

    def ack_all(self, deliveries: Sequence[Delivery]) -> int:
        """Acknowledge a chunk's messages of the current connection, in arrival order."""
        mids = [d.mid for d in deliveries if d.qos and d.generation == self.generation]  # QoS 1: see decode_publish
        self.client.puback_all(mids)
        return len(mids)

    def _handle_connect(self, client: mqtt.Client, _userdata: Any, flags: mqtt.ConnectFlags,
                        reason: ReasonCode, _props: Properties | None) -> None:
        self._answered = True
        if reason.is_failure:
            hint = "; check the user name and password in MQTT_URL" if reason.value in (134, 135) else ""
            log.error("mqtt connect refused: %s%s", reason, hint)
            return
        self._answered = True
        self.session_present = bool(flags.session_present)
        self.generation += 1
        self.session.connected(self.session_present)
        filters = subscription_filters(self.config.topics, self.config.shared_group)
        log.info("mqtt connected (session present=%s); subscribing to %s at qos %d",
                 flags.session_present, ",".join(filters), self.config.qos)
        qos = self.config.qos
        if self.config.v5:
            client.subscribe([(f, SubscribeOptions(qos=qos)) for f in filters])
        else:
            client.subscribe([(f, qos) for f in filters])
        self.connected.set()
        metrics.MQTT_CONNECTED.set(1)
        self.session.subscribed()  # after the SUBSCRIBE has gone out: a Redis round trip

    def _handle_disconnect(self, _client: mqtt.Client, _userdata: Any, flags: mqtt.DisconnectFlags,
                           reason: ReasonCode, props: Properties | None) -> None:
        self.connected.clear()
        self.resume_reads()  # the next connection's CONNACK must be read, whatever is held
        metrics.MQTT_CONNECTED.set(0)
        answered, self._answered = self._answered, False
        if not answered and self.config.v5 and not self._stopping:
            # MQTT 3.1.1 says a server that does not speak the protocol level asked for may close the
            # connection without a CONNACK; RabbitMQ before 3.13 does so to every MQTT 5 client.
            log.error("mqtt: the broker closed the connection without answering our MQTT 5 CONNECT (%s); "
                      "if it speaks only MQTT 3.1.1, set MQTT_PROTOCOL=3.1.1; reconnecting with backoff", reason)
        elif flags.is_disconnect_packet_from_server:
            said = getattr(props, "ReasonString", "")  # absent unless the broker added one
            self.session.server_disconnected(reason.value, str(reason), said)
        elif self._stopping:
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

    def _handle_publish_packet(self, topic: bytes, payload: bytes, mid: int, qos: int) -> None:
        try:
            name = topic.decode()
        except UnicodeDecodeError:  # brokers should refuse such topics; keep the message anyway
            name = topic.decode("utf-8", "replace")
        self._on_delivery(Delivery(name, payload, self._clock(), mid, qos, self.generation,
                                   len(topic) + len(payload)))

"""The MQTT side of the listener: a paho-mqtt 2.x client with a persistent session and manual acks.

Owns connecting (TLS, credentials, reconnect with backoff), subscribing (optionally as a shared
subscription) and handing each received message to a callback with what is needed to acknowledge
it later. Refuses to acknowledge anything by itself: PUBACK goes out only when the caller says the
message is safe.

Why these options: MQTT v5 with `clean_start=False` and a session-expiry interval (or MQTT 3.1.1
with `clean_session=False`) keeps the session (and the QoS 1 messages queued for it) across
restarts; paho's default `MQTT_CLEAN_START_FIRST_ONLY` would throw it away at every process
start. A connect that finds no session where one was expected, and a DISCONNECT the broker sends,
are errors with a metric each (`listener.session_alarm`). In MQTT 5, `Receive Maximum` caps
how many unacknowledged messages the broker sends us, which bounds the listener's memory while
it waits for Redis, and `Maximum Packet Size` caps the size of one packet: the framing here
refuses a larger one rather than buffer it. A broker does not always keep to Receive Maximum
(Mosquitto 2.0.11 stops doing so once PUBACKs flow, and QoS 0 messages have no such cap), so the
caller can also hold reads: the socket is then left unread and TCP makes the broker wait.
MQTT 3.1.1 has neither property: the broker's own limits apply, and the read hold alone keeps the
listener's memory bounded.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Literal, Protocol, cast

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.client import PUBACK, time_func
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest_tasks import metrics
from ingest_tasks.settings import MQTT_PACKET_LIMIT, MqttAddress, SettingProblem, parse_mqtt_url, read_secret_file
from listener.keepalive import enable_keepalive
from listener.session_alarm import SESSION_LOST_HINT, SessionWatch, Verdict, disconnect_hint, disconnect_reason_name

log = logging.getLogger(__name__)

KEEPALIVE_S = 30
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
RECEIVE_MAXIMUM_LIMIT = 65_535
_PUBACK = struct.Struct("!BBH")  # fixed header, remaining length 2, packet id: MQTT 3.1.1 and 5


READ_SIZE = 65_536  # bytes read from the broker's socket at a time
READ_HOLD_POLL_S = 0.05  # while reads are held, how often paho's loop still writes and keeps alive
MAX_LENGTH_BYTES = 4  # MQTT's "remaining length" is a varint of at most four bytes
PUBLISH_TYPE = 0x30

PublishHandler = Callable[[bytes, bytes, int, int], None]  # topic, payload, packet id, qos


class MalformedMqtt(ValueError):
    """Bytes from the broker that are not MQTT: the connection is dropped and made again."""


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """An MQTT variable byte integer at `pos`: (value, position after it), or None if cut off at `end`."""
    value, shift = 0, 0
    for i in range(pos, min(end, pos + MAX_LENGTH_BYTES)):
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    if end - pos >= MAX_LENGTH_BYTES:
        raise MalformedMqtt("variable byte integer longer than four bytes")
    return None


def decode_publish(command: int, buf: bytes, pos: int, end: int, v5: bool) -> tuple[bytes, bytes, int, int]:
    """Topic, payload, packet id and QoS of the PUBLISH packet whose variable header starts at `pos`.

    The same reading as paho's `_packet.decode_publish`, without building the objects the
    listener never looks at (MQTTMessage, its Condition, a Properties table). The properties are
    skipped: the listener never allows topic aliases, the only one that would change the topic.
    """
    qos = (command >> 1) & 3
    if qos == 3:
        raise MalformedMqtt("PUBLISH with QoS 3")
    if pos + 2 > end:
        raise MalformedMqtt("PUBLISH shorter than its topic length")
    at = topic_end = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    mid = 0
    if qos:
        if at + 2 > end:
            raise MalformedMqtt("PUBLISH cut off before its packet id")
        mid = (buf[at] << 8) | buf[at + 1]
        at += 2
    if v5:
        props = _varint(buf, at, end)
        if props is None:
            raise MalformedMqtt("PUBLISH cut off in its properties")
        at = props[1] + props[0]
    if at > end:
        raise MalformedMqtt("PUBLISH shorter than its header")
    return buf[pos + 2:topic_end], buf[at:end], mid, qos


class BatchReadingClient(mqtt.Client):
    """paho's Client, reading the socket 64 KiB at a time and handling every packet it holds.

    paho reads each packet with three or more recv calls, handles one packet per select(), and
    builds an MQTTMessage (with a threading.Condition) and a Properties table for every PUBLISH:
    at thousands of messages a second that is most of the listener's CPU. Here each wake-up reads
    what the socket has and frames the packets itself; QoS 0 and 1 PUBLISH packets go straight to
    `on_publish_packet`, every other packet to paho's own handler, so connecting, subscribing,
    keep-alive, QoS 2 and acknowledgements stay paho's. (paho is pinned: this relies on its
    `_packet_read`, `_packet_handle`, `_in_packet`, `_sock_recv` and `_msgtime_mutex`.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The start of a packet whose end has not arrived yet, in pieces: joined once it is all
        # there (`_pending_need` bytes, when known), so a large packet is not copied at every read.
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._pending_need = 0
        self.on_publish_packet: PublishHandler | None = None
        # Asked before every read: True leaves the socket unread (see the module's doc).
        self.hold_reads: Callable[[], bool] = lambda: False
        self.reads_resumed = threading.Event()  # set to end a hold's wait early
        # The Maximum Packet Size announced in CONNECT: a larger packet is a protocol error, so
        # a broker's bug cannot make this client buffer up to MQTT's 256 MiB for one packet.
        self.max_packet_bytes = MQTT_PACKET_LIMIT
        self.refresh_login: Callable[[], None] = lambda: None  # called before every (re)connect

    def puback_all(self, mids: Sequence[int]) -> None:
        """PUBACK these QoS 1 messages in one write: the bytes paho's `ack` sends, one packet each.

        paho's `ack` queues a packet per message and wakes its network thread for each; for the
        messages of a chunk that is many times the CPU of this.
        """
        if mids:
            self._packet_queue(PUBACK, b"".join(map(_PUBACK.pack, repeat(PUBACK), repeat(2), mids)), 0, 0)

    def reconnect(self) -> MQTTErrorCode:
        self._pending, self._pending_size, self._pending_need = [], 0, 0  # the old connection's bytes
        self.refresh_login()
        try:
            return super().reconnect()
        except OSError as exc:
            # paho retries silently (no on_connect is called): a refused TCP connection or a TLS
            # certificate that does not verify would otherwise leave no trace in the log.
            log.warning("mqtt cannot connect to %s:%d: %s; retrying with backoff", self.host, self.port, exc)
            raise

    def _create_socket_connection(self) -> socket.socket:
        sock = super()._create_socket_connection()
        enable_keepalive(sock)  # before TLS wraps it; each reconnect makes a new one
        return sock

    def _packet_read(self) -> MQTTErrorCode:
        if self.hold_reads():
            # Back to paho's loop without reading: it still sends PUBACKs and PINGREQs meanwhile.
            # The socket is readable (paho calls this only then), so the broker is there: say so
            # to paho's keep-alive, which would otherwise drop the connection for want of PINGRESP.
            with self._msgtime_mutex:
                self._last_bytes_received = time_func()
            self.reads_resumed.wait(READ_HOLD_POLL_S)
            self.reads_resumed.clear()
            return MQTTErrorCode.MQTT_ERR_AGAIN
        try:
            data = self._sock_recv(READ_SIZE)
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_AGAIN
        except OSError as err:  # TimeoutError and ConnectionError included
            log.warning("mqtt failed to receive on the socket: %s", err)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if not data:
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        with self._msgtime_mutex:
            self._last_bytes_received = time_func()
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size < self._pending_need:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        buf = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        try:
            pos, rc = self._handle_packets(buf)
        except MalformedMqtt as exc:
            log.error("mqtt received a malformed packet: %s; reconnecting", exc)
            pos, rc = len(buf), MQTTErrorCode.MQTT_ERR_PROTOCOL
        rest = buf[pos:]
        self._pending, self._pending_size = ([rest] if rest else []), len(rest)
        return rc

    def _handle_packets(self, buf: bytes) -> tuple[int, MQTTErrorCode]:
        """Handle every complete packet in `buf`: where the unhandled rest starts, and the outcome.

        Sets `_pending_need` to the size of the packet the rest begins with, when that is known.
        """
        self._pending_need = 0
        pos, size = 0, len(buf)
        v5 = self._protocol == mqtt.MQTTv5
        fast = self.on_publish_packet if self._manual_ack else None
        while pos + 2 <= size:
            length = _varint(buf, pos + 1, size)
            if length is None:
                break
            start, end = length[1], length[1] + length[0]
            if end - pos > self.max_packet_bytes:
                raise MalformedMqtt(f"a packet of {end - pos} bytes, larger than the Maximum Packet Size "
                                    f"{self.max_packet_bytes} this client announced")
            if end > size:
                self._pending_need = end - pos
                break
            command = buf[pos]
            pos = end
            if fast is not None and command & 0xF0 == PUBLISH_TYPE and command & 0x06 != 0x04:
                fast(*decode_publish(command, buf, start, end, v5))
                continue
            rc = self._paho_handle(command, buf[start:end])
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return pos, rc
        return pos, MQTTErrorCode.MQTT_ERR_SUCCESS

    def _paho_handle(self, command: int, packet: bytes) -> MQTTErrorCode:
        self._in_packet = {"command": command, "have_remaining": 1, "remaining_count": [],
                           "remaining_mult": 1, "remaining_length": len(packet),
                           "packet": bytearray(packet), "to_process": 0, "pos": 0}
        try:
            return self._packet_handle()
        except MalformedPacket as exc:
            log.error("mqtt received a malformed packet: %s; reconnecting", exc)
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        finally:
            self._in_packet = {"command": 0, "have_remaining": 0, "remaining_count": [],
                               "remaining_mult": 1, "remaining_length": 0, "packet": bytearray(b""),
                               "to_process": 0, "pos": 0}


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


class SessionMemory(Protocol):
    """Whether this client id had a session on this broker before this process (kept outside it)."""

    def recall(self) -> bool | None:
        """True or False; None when it cannot be told (the store is unreachable)."""

    def remember(self) -> bool:
        """Record that the client id has a session; False when it could not be recorded."""


class NoSessionMemory:
    """No memory across processes: the first connect of a process never expects a session."""

    def recall(self) -> bool | None:
        return False

    def remember(self) -> bool:
        return True


def subscription_filters(topics: tuple[str, ...], shared_group: str) -> list[str]:
    return [f"$share/{shared_group}/{t}" if shared_group else t for t in topics]


class Subscriber:
    """A connected (and reconnecting) MQTT session that feeds `on_delivery`."""

    def __init__(self, config: SubscriberConfig, on_delivery: Callable[[Delivery], None],
                 clock: Callable[[], float], memory: SessionMemory | None = None) -> None:
        self.config = config
        self._memory = memory or NoSessionMemory()
        self._remembered = False
        self._watch = SessionWatch(config.keeps_session, expected=False)
        self._on_delivery = on_delivery
        self._clock = clock
        self.generation = 0
        self.session_present = False  # whether the broker kept our session at the last connect
        self.connected = threading.Event()
        self._stopping = False
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
        client.on_message = self._handle_message  # QoS 2: paho's own handling
        client.on_publish_packet = self._handle_publish_packet  # QoS 0 and 1
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
        self._watch.expected = self._memory.recall() if self.config.keeps_session else False
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
        current = [d for d in deliveries if d.qos > 0 and d.generation == self.generation]
        self.client.puback_all([d.mid for d in current if d.qos == 1])
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
        self._check_session(self.session_present)
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
        if not self._remembered and self.config.keeps_session:  # after the SUBSCRIBE: a Redis round trip
            self._remembered = self._memory.remember()

    def _check_session(self, present: bool) -> None:
        verdict = self._watch.connected(present)
        if verdict is Verdict.LOST:
            metrics.MQTT_SESSION_LOST.inc()
            log.error("mqtt session lost: the broker had no session for client id %s where one was expected; %s",
                      self.config.client_id, SESSION_LOST_HINT)
        elif verdict is Verdict.UNKNOWN:
            log.warning("mqtt no session for client id %s, and whether one existed before this start cannot be "
                        "told; if it did, messages queued for it were lost", self.config.client_id)

    def _handle_disconnect(self, _client: mqtt.Client, _userdata: Any, flags: mqtt.DisconnectFlags,
                           reason: ReasonCode, props: Properties | None) -> None:
        self.connected.clear()
        self.resume_reads()  # the next connection's CONNACK must be read, whatever is held
        metrics.MQTT_CONNECTED.set(0)
        if flags.is_disconnect_packet_from_server:
            self._report_server_disconnect(reason, props)
        elif self._stopping:
            log.info("mqtt disconnected: %s", reason)
        else:
            log.warning("mqtt disconnected: %s; reconnecting with backoff", reason)

    def _report_server_disconnect(self, reason: ReasonCode, props: Properties | None) -> None:
        """The broker closed the connection with a DISCONNECT packet (MQTT 5 only) and said why."""
        name = disconnect_reason_name(reason.value)
        metrics.MQTT_DISCONNECTS.labels(name).inc()
        said = getattr(props, "ReasonString", "")  # absent unless the broker added one
        log.error("mqtt the broker disconnected the listener: %s (0x%02X%s); %s. Messages queued for it are lost "
                  "if the broker discards its session too (the next connect tells)",
                  reason, reason.value, f", {said!r}" if said else "", disconnect_hint(name))

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

    def _handle_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # brokers should refuse such topics; keep the message anyway
            topic = msg._topic.decode("utf-8", "replace")
        payload = cast(bytes, msg.payload)  # paho hands over bytes; its annotation also allows bytearray
        self._on_delivery(Delivery(topic, payload, self._clock(), msg.mid, msg.qos, self.generation,
                                   len(msg._topic) + len(payload)))

"""The listener's MQTT codec: cuts the broker's byte stream into packets, decodes PUBLISH, encodes PUBACK.

Pure: bytes in, packets out, no socket and no paho. Owns framing (the fixed header's variable
byte integer, a packet that arrives in pieces, the Maximum Packet Size the client announced) and
the PUBLISH layout of MQTT 5 (with properties) and 3.1.1 (without). Refuses everything else:
CONNACK, SUBACK, PINGRESP, DISCONNECT, ... are handed whole to the caller's `on_packet`, which
gives them to paho. Bytes that are not MQTT raise `MalformedMqtt`, once, and leave nothing behind.

Why our own: paho reads each packet with three or more recv calls, handles one packet per
select() and builds an MQTTMessage (with a threading.Condition) and a Properties table for every
PUBLISH; at thousands of messages a second that is most of the listener's CPU.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from itertools import repeat

MAX_LENGTH_BYTES = 4  # a variable byte integer has at most four bytes
PUBLISH = 0x30
PUBACK = 0x40
_PUBACK = struct.Struct("!BBH")  # fixed header, remaining length 2, packet id: MQTT 3.1.1 and 5

Publish = tuple[bytes, bytes, int, int]  # topic, payload, packet id (0 at QoS 0), QoS
PublishHandler = Callable[[bytes, bytes, int, int], None]
PacketHandler = Callable[[int, bytes], bool]  # first byte, rest after the length; False: stop reading


class MalformedMqtt(ValueError):
    """Bytes from the broker that this client cannot accept as MQTT: the connection is dropped and made again."""


def read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """The variable byte integer at `pos`: (value, position after it), or None if cut off at `end`."""
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


def encode_varint(value: int) -> bytes:
    if not 0 <= value < 1 << 28:
        raise ValueError(f"{value} does not fit a variable byte integer")
    out = bytearray()
    while True:
        value, byte = value >> 7, value & 0x7F
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def decode_publish(command: int, buf: bytes, pos: int, end: int, v5: bool) -> Publish:
    """Topic, payload, packet id and QoS of the PUBLISH whose variable header is `buf[pos:end]`.

    The properties are skipped: the client never allows topic aliases, the only property that
    would change the topic. QoS 2 is refused: the listener subscribes at QoS 1 at most, and a
    broker must send a message at no more than the subscription's QoS.
    """
    qos = (command >> 1) & 3
    if qos > 1:
        raise MalformedMqtt(f"PUBLISH at QoS {qos} on a subscription of QoS 1 at most")
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
        props = read_varint(buf, at, end)
        if props is None:
            raise MalformedMqtt("PUBLISH cut off in its properties")
        at = props[1] + props[0]
    if at > end:
        raise MalformedMqtt("PUBLISH shorter than its header")
    return buf[pos + 2:topic_end], buf[at:end], mid, qos


def encode_pubacks(mids: Sequence[int]) -> bytes:
    """One PUBACK per packet id, back to back (the same bytes in MQTT 3.1.1 and 5)."""
    return b"".join(map(_PUBACK.pack, repeat(PUBACK), repeat(2), mids))


class PacketFramer:
    """The packets of one connection's byte stream, however the stream is cut into reads.

    The start of a packet whose end has not arrived is kept in pieces and joined once it is all
    there, so a large packet is not copied at every read. A packet larger than
    `max_packet_bytes` is refused at its header, so a broker's bug cannot make the client buffer
    up to MQTT's 256 MiB for one packet.
    """

    def __init__(self, v5: bool, max_packet_bytes: int) -> None:
        self.v5 = v5
        self.max_packet_bytes = max_packet_bytes
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._pending_need = 0  # the size of the packet the pending bytes begin, when known

    @property
    def pending_bytes(self) -> int:
        return self._pending_size

    def reset(self) -> None:
        """Forget a partial packet: the connection it came on is gone."""
        self._pending, self._pending_size, self._pending_need = [], 0, 0

    def feed(self, data: bytes, on_publish: PublishHandler, on_packet: PacketHandler) -> bool:
        """Hand every packet `data` completes to its handler, in order; False if `on_packet` said stop.

        Raises MalformedMqtt (and forgets what it held) for bytes that are not MQTT.
        """
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size < self._pending_need:
            return True
        buf = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        try:
            pos, go_on = self._handle(buf, on_publish, on_packet)
        except MalformedMqtt:
            self.reset()
            raise
        rest = buf[pos:]
        self._pending, self._pending_size = ([rest] if rest else []), len(rest)
        return go_on

    def _handle(self, buf: bytes, on_publish: PublishHandler, on_packet: PacketHandler) -> tuple[int, bool]:
        """Where the unhandled rest of `buf` starts, and whether to go on."""
        self._pending_need = 0
        pos, size, v5 = 0, len(buf), self.v5
        while pos + 2 <= size:
            length = read_varint(buf, pos + 1, size)
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
            if command & 0xF0 == PUBLISH:
                on_publish(*decode_publish(command, buf, start, end, v5))
            elif not on_packet(command, buf[start:end]):
                return pos, False
        return pos, True

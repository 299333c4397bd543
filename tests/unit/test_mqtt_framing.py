"""The listener's MQTT codec: every PUBLISH arrives whole and unchanged however the bytes are cut, and
any bytes at all end in exactly one outcome (packets and a kept rest, or one MalformedMqtt).

The packets are encoded here by the MQTT 5 rules (with properties) and the MQTT 3.1.1 rules
(without), independently of the decoder (with the benchmark publisher's variable-length integer
encoder). The last tests put the codec behind a real socket pair in `BatchReadingClient`, the
way the broker's bytes reach it, and check what goes to paho.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from bench.publisher import varint
from listener.mqtt import BatchReadingClient
from listener.mqtt_codec import MalformedMqtt, PacketFramer, encode_pubacks, encode_varint, read_varint

Publish = tuple[bytes, bytes, int, int]  # topic, payload, packet id, qos
Event = tuple[object, ...]  # ("publish", topic, payload, mid, qos) or ("packet", command, body)


def encode(topic: bytes, payload: bytes, mid: int, qos: int, properties: bytes | None, dup: bool = False) -> bytes:
    """A PUBLISH packet; `properties` None is the MQTT 3.1.1 layout, which has no properties field."""
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if qos else b"")
    body += (b"" if properties is None else varint(len(properties)) + properties) + payload
    return bytes([0x30 | (0x08 if dup else 0) | (qos << 1)]) + varint(len(body)) + body


def cut(stream: bytes, cuts: Sequence[int]) -> list[bytes]:
    at, pieces = 0, []
    for end in sorted({c % (len(stream) + 1) for c in cuts} | {len(stream)}):
        pieces.append(stream[at:end])
        at = end
    return [p for p in pieces if p]


def frame(pieces: Sequence[bytes], v5: bool = True, max_packet_bytes: int = 1 << 28) -> tuple[list[Event], str, int]:
    """Feed the pieces in order: what was handed out, how it ended, and how many bytes are kept."""
    framer, events = PacketFramer(v5, max_packet_bytes), list[Event]()

    def to_paho(command: int, body: bytes) -> bool:
        events.append(("packet", command, body))
        return True

    for piece in pieces:
        try:
            framer.feed(piece, lambda *p: events.append(("publish", *p)), to_paho)
        except MalformedMqtt:
            return events, "malformed", framer.pending_bytes
    return events, "ok", framer.pending_bytes


big_payloads = st.builds(lambda n, seed: bytes((seed + i) % 256 for i in range(n)),
                         st.integers(16_000, 20_000), st.integers(0, 255))
publishes = st.lists(st.tuples(
    st.binary(min_size=1, max_size=40),  # topic (the broker checks UTF-8; the listener keeps whatever came)
    st.one_of(st.binary(max_size=300), big_payloads),  # remaining lengths of 1 to 3 bytes
    st.integers(1, 65_535),
    st.sampled_from([0, 1]),
    st.sampled_from([b"", b"\x01\x01", b"\x02\x00\x00\x00\x3c\x26\x00\x01k\x00\x01v"]),  # none, format, expiry+user
), min_size=1, max_size=12)
cuts = st.lists(st.integers(0, 70_000), max_size=8)


@settings(max_examples=150, deadline=None)
@given(publishes, cuts, st.booleans())
def test_every_publish_arrives_whole_however_the_stream_is_cut(
    packets: list[tuple[bytes, bytes, int, int, bytes]], where: list[int], v5: bool,
) -> None:
    # 3.1.1 has no properties: a decoder reading a properties length would eat the payload's first bytes.
    stream = b"".join(encode(t, p, m, q, props if v5 else None) for t, p, m, q, props in packets)
    expected = [("publish", t, p, m if q else 0, q) for t, p, m, q, _ in packets]
    assert frame(cut(stream, where), v5) == (expected, "ok", 0)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), cuts, st.booleans(), st.integers(2, 700))
def test_any_bytes_end_in_one_outcome_however_they_are_cut(
    stream: bytes, where: list[int], v5: bool, max_packet_bytes: int,
) -> None:
    whole = frame([stream], v5, max_packet_bytes)
    events, outcome, kept = whole
    assert frame(cut(stream, where), v5, max_packet_bytes) == whole
    assert outcome in ("ok", "malformed")
    if outcome == "malformed":
        assert kept == 0  # nothing of a broken stream is kept for the next connection
    else:
        assert kept <= len(stream) and all(len(e) in (3, 5) for e in events)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, (1 << 28) - 1))
def test_a_variable_byte_integer_reads_back_as_written(value: int) -> None:
    data = encode_varint(value)
    assert data == varint(value)
    assert read_varint(data, 0, len(data)) == (value, len(data))
    assert read_varint(data, 0, len(data) - 1) is None  # cut off: wait for more


def test_pubacks_are_one_packet_per_packet_id() -> None:
    assert encode_pubacks([1, 0x1234]) == b"\x40\x02\x00\x01\x40\x02\x12\x34"


def test_a_packet_for_paho_between_publishes_goes_to_paho_in_order() -> None:
    pingresp, suback = b"\xd0\x00", b"\x90\x04\x00\x07\x00\x01"
    stream = encode(b"a/b", b"1", 7, 1, b"") + pingresp + suback + encode(b"a/c", b"2", 8, 1, b"")
    assert frame(cut(stream, [3, 17]))[0] == [
        ("publish", b"a/b", b"1", 7, 1), ("packet", 0xD0, b""), ("packet", 0x90, b"\x00\x07\x00\x01"),
        ("publish", b"a/c", b"2", 8, 1)]


def test_a_packet_handler_that_says_stop_keeps_the_rest_unread() -> None:
    framer = PacketFramer(True, 1 << 20)
    stream = b"\xe0\x00" + encode(b"a/b", b"1", 7, 1, b"")  # a DISCONNECT, then a PUBLISH
    seen: list[Publish] = []
    assert framer.feed(stream, lambda *p: seen.append(p), lambda command, body: False) is False
    assert seen == [] and framer.pending_bytes == len(stream) - 2


@pytest.mark.parametrize("stream", [
    pytest.param(b"\x32\x03\x00\x05a", id="topic longer than the packet"),
    pytest.param(b"\x32\x04\x00\x01a\x00", id="packet id cut off"),
    pytest.param(b"\x32\x05\x00\x01a\x00\x01", id="properties length missing"),
    pytest.param(b"\x32\x06\x00\x01a\x00\x01\x09", id="properties longer than the packet"),
    pytest.param(b"\x30\xff\xff\xff\xff\x01", id="remaining length of five bytes"),
    pytest.param(b"\x36\x06\x00\x01a\x00\x01\x00", id="QoS 3"),
    pytest.param(b"\x34\x06\x00\x01a\x00\x01\x00", id="QoS 2, above the subscription's QoS 1"),
])
def test_a_malformed_packet_is_refused_and_nothing_of_it_delivered(stream: bytes) -> None:
    assert frame([stream]) == ([], "malformed", 0)


@pytest.mark.parametrize(("over", "outcome"), [
    pytest.param(0, "ok", id="exactly the maximum: delivered"),
    pytest.param(1, "malformed", id="one byte over: refused"),
])
def test_a_packet_is_read_up_to_the_announced_maximum_packet_size_and_no_further(over: int, outcome: str) -> None:
    header = len(encode(b"t/big", bytes(20_000), 9, 1, b"")) - 20_000  # besides the payload (3-byte length)
    payload = bytes(100_000 - header + over)
    packet = encode(b"t/big", payload, 9, 1, b"")
    assert len(packet) == 100_000 + over
    delivered = [] if over else [("publish", b"t/big", payload, 9, 1)]
    assert frame(cut(packet, [1000, 50_000]), max_packet_bytes=100_000) == (delivered, outcome, 0)


def test_a_huge_remaining_length_is_refused_at_its_header_without_buffering() -> None:
    # A broker's bug (or a hostile one) announcing MQTT's largest packet, 256 MiB: were it
    # believed, the client would keep every byte that follows until 256 MiB had come.
    assert frame([b"\x32\xff\xff\xff\x7f" + bytes(60_000)], max_packet_bytes=1_048_576) == ([], "malformed", 0)


@pytest.mark.parametrize(("v5", "properties"), [
    pytest.param(True, b"\x01\x01", id="MQTT 5: a properties field"),
    pytest.param(False, None, id="MQTT 3.1.1: no properties field"),
])
def test_a_payload_starting_with_what_looks_like_properties_arrives_unchanged(
    v5: bool, properties: bytes | None,
) -> None:
    payload = b"\x02\x01\x01{}"  # read as properties, these bytes would vanish from the payload
    stream = encode(b"t/x", payload, 5, 1, properties) + encode(b"t/y", payload, 0, 0, properties)
    assert frame([stream], v5)[0] == [("publish", b"t/x", payload, 5, 1), ("publish", b"t/y", payload, 0, 0)]


@contextmanager
def wiring(protocol: int = mqtt.MQTTv5) -> Iterator[tuple[BatchReadingClient, socket.socket, socket.socket,
                                                         list[Publish]]]:
    """A client reading one end of a socket pair; the test plays the broker at the other end."""
    client = BatchReadingClient(CallbackAPIVersion.VERSION2, client_id="framing-test",
                                protocol=protocol, manual_ack=True)
    received: list[Publish] = []
    client.on_publish_packet = lambda *p: received.append(p)
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    try:
        yield client, ours, broker, received
    finally:
        ours.close()
        broker.close()


def read_all(client: BatchReadingClient, sock: socket.socket) -> MQTTErrorCode:
    """What paho's loop does while select() says the socket is readable."""
    while (rc := client.read_from(sock)) == MQTTErrorCode.MQTT_ERR_SUCCESS:
        pass
    return rc


def test_the_client_reads_a_large_publish_in_small_pieces_once_and_whole() -> None:
    payload = bytes(range(256)) * 800  # 200 KiB: a four-byte remaining length
    stream = encode(b"t/big", payload, 9, 1, b"") + encode(b"t/small", b"x", 10, 1, b"")
    with wiring() as (client, ours, broker, received):
        for at in range(0, len(stream), 1000):
            broker.sendall(stream[at:at + 1000])
            assert read_all(client, ours) == MQTTErrorCode.MQTT_ERR_AGAIN
    assert received == [(b"t/big", payload, 9, 1), (b"t/small", b"x", 10, 1)]


def test_the_client_gives_other_packets_to_paho() -> None:
    subacks: list[tuple[int, list[int]]] = []
    suback = b"\x90\x04\x00\x07\x00\x01"  # packet id 7, properties none, granted QoS 1
    with wiring() as (client, ours, broker, received):
        client.on_subscribe = lambda _c, _u, mid, reasons, _p: subacks.append((mid, [r.value for r in reasons]))
        broker.sendall(encode(b"a/b", b"1", 7, 1, b"") + suback + encode(b"a/c", b"2", 8, 1, b""))
        assert read_all(client, ours) == MQTTErrorCode.MQTT_ERR_AGAIN
    assert received == [(b"a/b", b"1", 7, 1), (b"a/c", b"2", 8, 1)]
    assert subacks == [(7, [1])]


def test_the_client_drops_the_connection_on_a_malformed_packet_and_keeps_nothing() -> None:
    with wiring(mqtt.MQTTv311) as (client, ours, broker, received):
        broker.sendall(b"\x32\x03\x00\x05a" + encode(b"a/b", b"1", 7, 1, None))
        assert read_all(client, ours) == MQTTErrorCode.MQTT_ERR_PROTOCOL
        assert (received, client.framer.pending_bytes) == ([], 0)


def test_the_client_reports_a_closed_connection_as_lost() -> None:
    with wiring() as (client, ours, broker, _):
        broker.close()
        assert read_all(client, ours) == MQTTErrorCode.MQTT_ERR_CONN_LOST


def test_the_client_refuses_to_acknowledge_by_itself() -> None:
    with pytest.raises(ValueError, match="manual_ack"):
        BatchReadingClient(CallbackAPIVersion.VERSION2, client_id="framing-test", protocol=mqtt.MQTTv5)

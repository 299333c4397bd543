"""The listener's own MQTT framing: every PUBLISH arrives whole and unchanged, however the bytes are cut.

The bytes go through a real socket pair into `BatchReadingClient._packet_read`, the way the
broker's bytes do; the packets are encoded here by the MQTT 5 rules (with properties) and the
MQTT 3.1.1 rules (without), independently of the decoder (with the benchmark publisher's
variable-length integer encoder).
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

Publish = tuple[bytes, bytes, int, int]  # topic, payload, packet id, qos


def encode(topic: bytes, payload: bytes, mid: int, qos: int, properties: bytes | None, dup: bool = False) -> bytes:
    """A PUBLISH packet; `properties` None is the MQTT 3.1.1 layout, which has no properties field."""
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if qos else b"")
    body += (b"" if properties is None else varint(len(properties)) + properties) + payload
    return bytes([0x30 | (0x08 if dup else 0) | (qos << 1)]) + varint(len(body)) + body


@contextmanager
def wiring(protocol: int = mqtt.MQTTv5) -> Iterator[tuple[BatchReadingClient, socket.socket, list[Publish]]]:
    """A client whose socket is one end of a pair; the test plays the broker at the other end."""
    client = BatchReadingClient(CallbackAPIVersion.VERSION2, client_id="framing-test",
                                protocol=protocol, manual_ack=True)
    received: list[Publish] = []
    client.on_publish_packet = lambda *p: received.append(p)
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours
    try:
        yield client, broker, received
    finally:
        ours.close()
        broker.close()


@pytest.fixture
def wired() -> Iterator[tuple[BatchReadingClient, socket.socket, list[Publish]]]:
    with wiring() as w:
        yield w


def read_all(client: BatchReadingClient) -> MQTTErrorCode:
    """What `_loop` does while select() says the socket is readable."""
    while True:
        rc = client._packet_read()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return rc


big_payloads = st.builds(lambda n, seed: bytes((seed + i) % 256 for i in range(n)),
                         st.integers(16_000, 20_000), st.integers(0, 255))
publishes = st.lists(st.tuples(
    st.binary(min_size=1, max_size=40),  # topic (the broker checks UTF-8; the listener keeps whatever came)
    st.one_of(st.binary(max_size=300), big_payloads),  # remaining lengths of 1 to 3 bytes
    st.integers(1, 65_535),
    st.sampled_from([0, 1]),
    st.sampled_from([b"", b"\x01\x01", b"\x02\x00\x00\x00\x3c\x26\x00\x01k\x00\x01v"]),  # none, format, expiry+user
), min_size=1, max_size=12)


@settings(max_examples=100, deadline=None)
@given(publishes, st.lists(st.integers(1, 70_000), min_size=1, max_size=8))
def test_every_publish_arrives_whole_however_the_stream_is_cut(
    packets: list[tuple[bytes, bytes, int, int, bytes]], cuts: list[int],
) -> None:
    with wiring() as (client, broker, received):
        stream_in_pieces(client, broker, packets, cuts)
    expected = [(topic, payload, mid if qos else 0, qos) for topic, payload, mid, qos, _ in packets]
    assert received == expected


@settings(max_examples=100, deadline=None)
@given(publishes, st.lists(st.integers(1, 70_000), min_size=1, max_size=8))
def test_every_mqtt_3_1_1_publish_arrives_whole_however_the_stream_is_cut(
    packets: list[tuple[bytes, bytes, int, int, bytes]], cuts: list[int],
) -> None:
    # 3.1.1 has no properties: a decoder reading a properties length would eat the payload's first bytes.
    without_properties = [(topic, payload, mid, qos, None) for topic, payload, mid, qos, _ in packets]
    with wiring(mqtt.MQTTv311) as (client, broker, received):
        stream_in_pieces(client, broker, without_properties, cuts)
    expected = [(topic, payload, mid if qos else 0, qos) for topic, payload, mid, qos, _ in packets]
    assert received == expected


def stream_in_pieces(client: BatchReadingClient, broker: socket.socket,
                     packets: Sequence[tuple[bytes, bytes, int, int, bytes | None]], cuts: list[int]) -> None:
    stream = b"".join(encode(*p) for p in packets)
    pieces, at = [], 0
    for cut in sorted({c % len(stream) for c in cuts} | {len(stream)}):
        pieces.append(stream[at:cut])
        at = cut
    for piece in pieces:
        if piece:
            broker.sendall(piece)
            assert read_all(client) == MQTTErrorCode.MQTT_ERR_AGAIN


def test_a_large_publish_in_small_pieces_arrives_once_and_whole(
    wired: tuple[BatchReadingClient, socket.socket, list[Publish]],
) -> None:
    client, broker, received = wired
    payload = bytes(range(256)) * 800  # 200 KiB: a four-byte remaining length
    stream = encode(b"t/big", payload, 9, 1, b"") + encode(b"t/small", b"x", 10, 1, b"")
    for at in range(0, len(stream), 1000):
        broker.sendall(stream[at:at + 1000])
        assert read_all(client) == MQTTErrorCode.MQTT_ERR_AGAIN
    assert received == [(b"t/big", payload, 9, 1), (b"t/small", b"x", 10, 1)]


def test_a_packet_for_paho_between_publishes_goes_to_paho(
    wired: tuple[BatchReadingClient, socket.socket, list[Publish]],
) -> None:
    client, broker, received = wired
    pingresp = b"\xd0\x00"
    broker.sendall(encode(b"a/b", b"1", 7, 1, b"") + pingresp + encode(b"a/c", b"2", 8, 1, b""))
    client._ping_t = 123.0  # paho's "a PINGREQ awaits its answer"; its PINGRESP handler clears it
    assert read_all(client) == MQTTErrorCode.MQTT_ERR_AGAIN
    assert received == [(b"a/b", b"1", 7, 1), (b"a/c", b"2", 8, 1)]
    assert client._ping_t == 0


@pytest.mark.parametrize("stream", [
    pytest.param(b"\x32\x03\x00\x05a", id="topic longer than the packet"),
    pytest.param(b"\x32\x04\x00\x01a\x00", id="packet id cut off"),
    pytest.param(b"\x32\x05\x00\x01a\x00\x01", id="properties length missing"),
    pytest.param(b"\x32\x06\x00\x01a\x00\x01\x09", id="properties longer than the packet"),
    pytest.param(b"\x30\xff\xff\xff\xff\x01", id="remaining length of five bytes"),
    pytest.param(b"\x36\x06\x00\x01a\x00\x01\x00", id="QoS 3"),
])
def test_a_malformed_packet_drops_the_connection_and_delivers_nothing(
    wired: tuple[BatchReadingClient, socket.socket, list[Publish]], stream: bytes,
) -> None:
    client, broker, received = wired
    broker.sendall(stream)
    assert read_all(client) == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert received == []


def test_a_closed_connection_is_reported_as_lost(
    wired: tuple[BatchReadingClient, socket.socket, list[Publish]],
) -> None:
    client, broker, _ = wired
    broker.close()
    assert read_all(client) == MQTTErrorCode.MQTT_ERR_CONN_LOST


@pytest.mark.parametrize(("over", "outcome"), [
    pytest.param(0, MQTTErrorCode.MQTT_ERR_AGAIN, id="exactly the maximum: delivered"),
    pytest.param(1, MQTTErrorCode.MQTT_ERR_PROTOCOL, id="one byte over: refused"),
])
def test_a_packet_is_read_up_to_the_announced_maximum_packet_size_and_no_further(
    wired: tuple[BatchReadingClient, socket.socket, list[Publish]], over: int, outcome: MQTTErrorCode,
) -> None:
    client, broker, received = wired
    client.max_packet_bytes = 100_000
    header = len(encode(b"t/big", bytes(20_000), 9, 1, b"")) - 20_000  # besides the payload (3-byte length)
    payload = bytes(100_000 - header + over)
    assert len(encode(b"t/big", payload, 9, 1, b"")) == 100_000 + over
    broker.sendall(encode(b"t/big", payload, 9, 1, b""))
    assert read_all(client) == outcome
    assert received == ([] if over else [(b"t/big", payload, 9, 1)])


def test_a_huge_remaining_length_is_refused_at_its_header_without_buffering(
    wired: tuple[BatchReadingClient, socket.socket, list[Publish]],
) -> None:
    # A broker's bug (or a hostile one) announcing MQTT's largest packet, 256 MiB: were it
    # believed, the client would keep every byte that follows until 256 MiB had come.
    client, broker, received = wired
    client.max_packet_bytes = 1_048_576
    broker.sendall(b"\x32\xff\xff\xff\x7f" + bytes(60_000))
    assert read_all(client) == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert (client._pending, client._pending_size, received) == ([], 0, [])


@pytest.mark.parametrize(("protocol", "properties"), [
    pytest.param(mqtt.MQTTv5, b"\x01\x01", id="MQTT 5: a properties field"),
    pytest.param(mqtt.MQTTv311, None, id="MQTT 3.1.1: no properties field"),
])
def test_a_payload_starting_with_what_looks_like_properties_arrives_unchanged(
    protocol: int, properties: bytes | None,
) -> None:
    payload = b"\x02\x01\x01{}"  # read as properties, these bytes would vanish from the payload
    with wiring(protocol) as (client, broker, received):
        broker.sendall(encode(b"t/x", payload, 5, 1, properties) + encode(b"t/y", payload, 0, 0, properties))
        assert read_all(client) == MQTTErrorCode.MQTT_ERR_AGAIN
    assert received == [(b"t/x", payload, 5, 1), (b"t/y", payload, 0, 0)]

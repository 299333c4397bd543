"""A cheap paced publisher for steady-load tests: one MQTT 3.1.1 connection, QoS 1, with a login.

Every broker of the matrix speaks 3.1.1 (RabbitMQ 3.10's MQTT plugin speaks nothing else), and
ejabberd and the test-owned RabbitMQ require a user name and password, which the benchmark's
publisher (`bench.publisher`, whose framing this reuses) does not send. It runs in a process
of its own, so its CPU does not slow the test's polling. Message `i` goes to device
`i % devices` with its own millisecond `ts` (strictly increasing per device), so every message
is exactly one `ts_measure` row and the row count tells a lost message.
"""

from __future__ import annotations

import multiprocessing
import queue
import select
import socket
import struct
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue

import orjson

from bench.publisher import CONNACK, PUBACK, packet, varint

CONNECT_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 60.0
WINDOW = 2000  # publishes waiting for their PUBACK at most: a slow broker slows the publisher
SLICE_S = 0.01  # publishes are written every 10 ms: 30 of them at 3,000 a second
START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z: the first message's ts


@dataclass(frozen=True)
class SteadyLoad:
    host: str
    port: int
    username: str | None
    password: str | None
    prefix: str  # topic prefix: topics are prefix/tenant/s1/dN/telem
    tenant: str
    rate: float  # messages a second
    seconds: float
    devices: int = 50

    @property
    def messages(self) -> int:
        return int(self.rate * self.seconds)


@dataclass(frozen=True)
class SteadyReport:
    sent: int
    acked: int
    seconds: float  # from the first publish to the last PUBACK
    error: str = ""


def payload(index: int, devices: int) -> bytes:
    ts_ms = START_MS + index // devices  # device d's messages are 1 ms apart
    second, milli = divmod(ts_ms, 1000)
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{milli:03d}Z"
    return orjson.dumps({"schema": "v1", "ts": ts, "points": [{"name": "n", "t": "int", "v": index}]})


def connect_packet(client_id: str, username: str | None, password: str | None) -> bytes:
    def field(text: str) -> bytes:
        data = text.encode()
        return struct.pack("!H", len(data)) + data

    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + b"\x00\x00" + field(client_id)  # keep-alive off
    body += (field(username) if username is not None else b"") + (field(password) if password is not None else b"")
    return packet(0x10, body)


class Connection:
    """A clean 3.1.1 session that publishes at QoS 1 and counts PUBACKs."""

    def __init__(self, load: SteadyLoad, client_id: str) -> None:
        self.sock = socket.create_connection((load.host, load.port), timeout=CONNECT_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(connect_packet(client_id, load.username, load.password))
        self.acked = 0
        self._rest = b""
        self._connack = False
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not self._connack:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no CONNACK from {load.host}:{load.port} within {CONNECT_TIMEOUT_S:.0f} s")
            self.read(0.1)
        self.sock.setblocking(False)

    def read(self, timeout: float) -> None:
        readable, _, _ = select.select([self.sock], [], [], timeout)
        if not readable:
            return
        try:
            data = self.sock.recv(65_536)
        except BlockingIOError:
            return
        if not data:
            raise RuntimeError("the broker closed the publisher's connection")
        buf, pos = self._rest + data, 0
        while len(buf) - pos >= 2 and len(buf) - pos >= 2 + buf[pos + 1]:  # CONNACK, PUBACK: short
            if buf[pos] == PUBACK:
                self.acked += 1
            elif buf[pos] == CONNACK:
                if buf[pos + 3] != 0:
                    raise RuntimeError(f"the broker refused the publisher: return code {buf[pos + 3]}")
                self._connack = True
            pos += 2 + buf[pos + 1]
        self._rest = buf[pos:]

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view):]
            except BlockingIOError:
                self.read(0.01)


def publish_paced(load: SteadyLoad, conn: Connection) -> int:
    topics = [f"{load.prefix}/{load.tenant}/s1/d{d}/telem".encode() for d in range(load.devices)]
    t0, sent, total = time.monotonic(), 0, load.messages
    while sent < total:
        due = min(total, int((time.monotonic() - t0) * load.rate) + 1)
        while due - conn.acked > WINDOW:
            conn.read(0.05)
            due = min(total, int((time.monotonic() - t0) * load.rate) + 1)
        batch = [publish_packet(topics[i % load.devices], i, payload(i, load.devices)) for i in range(sent, due)]
        conn.send(b"".join(batch))
        sent = due
        conn.read(max(0.0, t0 + sent / load.rate - time.monotonic()) if sent < total else 0)
    return sent


def publish_packet(topic: bytes, index: int, data: bytes) -> bytes:
    mid = index % 65_535 + 1  # ids in flight never wrap: WINDOW < 65,535
    body = struct.pack("!H", len(topic)) + topic + struct.pack("!H", mid) + data
    return b"\x32" + varint(len(body)) + body


def run(load: SteadyLoad, client_id: str, reports: Queue[SteadyReport]) -> None:
    """Process entry point: publish the load, wait for every PUBACK, report."""
    sent = 0
    started = time.monotonic()
    try:
        conn = Connection(load, client_id)
        started = time.monotonic()
        sent = publish_paced(load, conn)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while conn.acked < sent and time.monotonic() < deadline:
            conn.read(0.1)
        conn.sock.setblocking(True)
        conn.sock.sendall(b"\xe0\x00")  # DISCONNECT
        conn.sock.close()
        reports.put(SteadyReport(sent, conn.acked, time.monotonic() - started))
    except (OSError, RuntimeError) as exc:
        reports.put(SteadyReport(sent, 0, time.monotonic() - started, f"{type(exc).__name__}: {exc}"))


def publish_steadily(load: SteadyLoad, client_id: str) -> SteadyReport:
    """Publish `load` from a process of its own; its report once every PUBACK came (or it failed)."""
    context = multiprocessing.get_context("spawn")
    reports: Queue[SteadyReport] = context.Queue()
    proc = context.Process(target=run, args=(load, client_id, reports), daemon=True)
    proc.start()
    deadline = time.monotonic() + load.seconds + DRAIN_TIMEOUT_S + CONNECT_TIMEOUT_S + 30
    try:
        while time.monotonic() < deadline:
            try:
                return reports.get(timeout=1)
            except queue.Empty:
                if not proc.is_alive():
                    raise AssertionError(f"the publisher process died with exit code {proc.exitcode}") from None
        raise AssertionError("the publisher process never reported")
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()

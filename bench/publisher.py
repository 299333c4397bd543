"""A publisher process: a fleet of devices over one MQTT 3.1.1 connection, QoS 1, paced or flat out.

The load generator shares the machine with what it measures, so it is written to cost little:
its own few lines of MQTT on a plain socket (CONNECT, PUBLISH at QoS 1, PUBACK, DISCONNECT),
writing the publishes of each round in one send() and reading PUBACKs in bulk. paho cost about
125 us of CPU per message here (a send() per publish and several objects per PUBACK), more than
the listener. At most `window` publishes wait for their PUBACK at once, so a slow broker slows
the publisher instead of piling messages up unseen. Each message's `ts` is taken as its PUBLISH
is built, at most `BATCH` messages before the write. The reported CPU is what the process spent
between `go` and its last PUBACK (not its start-up).
"""

from __future__ import annotations

import resource
import select
import socket
import struct
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event, Semaphore

from bench import workload

CONNECT_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 120.0
BATCH = 32  # publishes built before one send()
READ_SIZE = 65_536
CONNACK, PUBACK = 0x20, 0x40


@dataclass(frozen=True)
class PublisherJob:
    index: int
    publishers: int
    host: str
    port: int
    messages: int
    points: int
    devices: int
    tenants: int
    invalid: float
    rate: float  # this publisher's share, messages/s; 0 = flat out
    window: int
    client_id: str


@dataclass(frozen=True)
class PublisherReport:
    index: int
    sent: int
    started: float
    finished: float
    cpu_s: float
    peak_rss_kb: int


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(command: int, body: bytes) -> bytes:
    return bytes([command]) + varint(len(body)) + body


def connect_packet(client_id: str, username: str | None = None, password: str | None = None) -> bytes:
    """CONNECT, MQTT 3.1.1: clean session, keep-alive 0 (off), the client id, a login if given."""
    def field(text: str) -> bytes:
        data = text.encode()
        return struct.pack("!H", len(data)) + data

    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + b"\x00\x00" + field(client_id)
    body += (field(username) if username is not None else b"") + (field(password) if password is not None else b"")
    return packet(0x10, body)


class Connection:
    """One MQTT 3.1.1 session (clean, no keep-alive) that publishes at QoS 1 and counts PUBACKs.

    Also the steady-load tests' publisher (`tests.steady_publisher`), which logs in."""

    def __init__(self, host: str, port: int, client_id: str, username: str | None = None,
                 password: str | None = None) -> None:
        self.sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(connect_packet(client_id, username, password))
        self._rest = b""
        self.inflight = 0
        self.acked = 0
        self._connack = False
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not self._connack:
            if time.monotonic() > deadline:
                raise RuntimeError(f"publisher {client_id}: no CONNACK from {host}:{port} within "
                                   f"{CONNECT_TIMEOUT_S:.0f} s")
            self.read(0.1)
        self.sock.setblocking(False)
        self._next_id = 0

    def publish_packet(self, topic: bytes, payload: bytes) -> bytes:
        self._next_id = self._next_id % 65_535 + 1  # ids in flight never wrap: window < 65,535
        self.inflight += 1
        body_len = 2 + len(topic) + 2 + len(payload)
        return b"".join((b"\x32", varint(body_len), struct.pack("!H", len(topic)), topic,
                         struct.pack("!H", self._next_id), payload))

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view):]
            except BlockingIOError:
                self.read(1.0, want_write=True)

    def read(self, timeout: float, want_write: bool = False) -> None:
        """Wait up to `timeout` for the broker; take the PUBACKs (and CONNACK) it sent."""
        readable, _, _ = select.select([self.sock], [self.sock] if want_write else [], [], timeout)
        if not readable:
            return
        try:
            data = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        if not data:
            raise RuntimeError("publisher: the broker closed the connection")
        buf = self._rest + data
        pos = 0
        while len(buf) - pos >= 2:
            command, length = buf[pos], buf[pos + 1]  # CONNACK and PUBACK are short: one length byte
            if length & 0x80:
                raise RuntimeError(f"publisher: unexpected packet {command:#x} from the broker")
            if len(buf) - pos < 2 + length:
                break
            if command == PUBACK:
                self.inflight -= 1
                self.acked += 1
            elif command == CONNACK:
                if buf[pos + 3] != 0:
                    raise RuntimeError(f"publisher: connection refused, return code {buf[pos + 3]}")
                self._connack = True
            pos += 2 + length
        self._rest = buf[pos:]

    def close(self) -> None:
        self.sock.setblocking(True)
        self.sock.sendall(b"\xe0\x00")  # DISCONNECT
        self.sock.close()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(job: PublisherJob, connected: Semaphore, go: Event, reports: Queue[PublisherReport]) -> None:
    """Process entry point: connect, wait for `go`, publish the share, wait for every PUBACK."""
    conn = Connection(job.host, job.port, job.client_id)
    connected.release()
    go.wait()
    started, cpu0 = time.time(), cpu_seconds()
    sent = publish_all(job, conn)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while conn.inflight > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"publisher {job.index}: PUBACKs missing after {DRAIN_TIMEOUT_S:.0f} s")
        conn.read(0.1)
    finished, cpu = time.time(), cpu_seconds() - cpu0
    conn.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reports.put(PublisherReport(job.index, sent, started, finished, cpu, peak))


def publish_all(job: PublisherJob, conn: Connection) -> int:
    clock = workload.IsoClock()
    names = workload.point_names(job.points)
    mine = workload.device_indexes(job.index, job.publishers, job.devices)
    topics = {d: workload.topic(d, job.tenants).encode() for d in mine}
    interval = 1.0 / job.rate if job.rate > 0 else 0.0
    batch = min(BATCH, job.window)
    t0 = time.monotonic()
    sent = 0
    pending: list[bytes] = []
    for index, device in workload.message_indexes(job.index, job.publishers, job.devices, job.messages):
        if not pending:
            if interval:
                while (ahead := t0 + sent * interval - time.monotonic()) > 0:
                    conn.read(ahead)
            while conn.inflight + batch > job.window:
                conn.read(1.0)
            conn.read(0)
        ts = clock.stamp(device, time.time_ns() // 1_000_000)
        if workload.is_invalid(index, job.invalid):
            payload = workload.invalid(ts, index)
        else:
            payload = workload.telemetry(ts, names, index)
        pending.append(conn.publish_packet(topics[device], payload))
        sent += 1
        if len(pending) >= batch or (interval and sent % 16 == 0):
            conn.send(b"".join(pending))
            pending.clear()
    if pending:
        conn.send(b"".join(pending))
    return sent

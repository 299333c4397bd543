"""A cheap paced publisher for steady-load tests: one MQTT 3.1.1 connection, QoS 1, with a login.

Every broker of the matrix speaks 3.1.1 (RabbitMQ 3.10's MQTT plugin speaks nothing else), and
ejabberd and the test-owned RabbitMQ require a user name and password, which the benchmark's
publisher (`bench.publisher`, whose connection this uses) does not send. It runs in a process
of its own, so its CPU does not slow the test's polling. Message `i` goes to device
`i % devices` with its own millisecond `ts` (strictly increasing per device), so every message
is exactly one `ts_measure` row and the row count tells a lost message.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue

import orjson

from bench.publisher import Connection

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


def publish_paced(load: SteadyLoad, conn: Connection) -> int:
    topics = [f"{load.prefix}/{load.tenant}/s1/d{d}/telem".encode() for d in range(load.devices)]
    t0, sent, total = time.monotonic(), 0, load.messages
    while sent < total:
        due = min(total, int((time.monotonic() - t0) * load.rate) + 1)
        while due - conn.acked > WINDOW:
            conn.read(0.05)
            due = min(total, int((time.monotonic() - t0) * load.rate) + 1)
        batch = [conn.publish_packet(topics[i % load.devices], payload(i, load.devices)) for i in range(sent, due)]
        conn.send(b"".join(batch))
        sent = due
        conn.read(max(0.0, t0 + sent / load.rate - time.monotonic()) if sent < total else 0)
    return sent


def run(load: SteadyLoad, client_id: str, reports: Queue[SteadyReport]) -> None:
    """Process entry point: publish the load, wait for every PUBACK, report."""
    sent = 0
    started = time.monotonic()
    try:
        conn = Connection(load.host, load.port, client_id, load.username, load.password)
        started = time.monotonic()
        sent = publish_paced(load, conn)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while conn.acked < sent and time.monotonic() < deadline:
            conn.read(0.1)
        conn.close()
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

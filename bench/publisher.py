"""A publisher process: a fleet of devices over one MQTT v5 connection, QoS 1, paced or flat out.

At most `window` publishes wait for their PUBACK at once, so a slow broker slows the publisher
instead of piling messages up inside paho (whose queue would hide the wait from the latency).
Each message's `ts` is taken just before it is handed to paho. The reported CPU is what the
process spent between `go` and its last PUBACK (not its start-up).
"""

from __future__ import annotations

import resource
import select
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event, Semaphore
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench import workload

CONNECT_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 120.0
ACK_POLL_EVERY = 32  # read PUBACKs this often while publishing flat out


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


class Inflight:
    """Publishes still waiting for their PUBACK; paho calls `acked` from `loop()` in this thread."""

    def __init__(self) -> None:
        self.count = 0

    def acked(self, *_args: Any) -> None:
        self.count -= 1


def connect(job: PublisherJob, inflight: Inflight) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=job.client_id, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(job.window)
    client.max_queued_messages_set(0)
    client.on_publish = inflight.acked
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    client.connect(job.host, job.port, 60, clean_start=True, properties=props)
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while not client.is_connected():
        if time.monotonic() > deadline:
            raise RuntimeError(f"publisher {job.index}: no CONNACK within {CONNECT_TIMEOUT_S:.0f} s")
        pump(client, 0.1)
    return client


def pump(client: mqtt.Client, timeout: float) -> None:
    """Read what the broker sent (PUBACKs), finish pending writes, keep the session alive.

    Not `client.loop()`: that creates paho's wake-up socket pair, after which every publish
    costs an extra send() system call, as much CPU as the publish itself.
    """
    sock = client.socket()
    if sock is None:
        raise RuntimeError("publisher: the broker closed the connection")
    readable, _, _ = select.select([sock], [], [], timeout)
    if readable:
        client.loop_read()
    if client.want_write():
        client.loop_write()
    client.loop_misc()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(job: PublisherJob, connected: Semaphore, go: Event, reports: Queue[PublisherReport]) -> None:
    """Process entry point: connect, wait for `go`, publish the share, wait for every PUBACK.

    One thread drives paho (no `loop_start`): a network thread would fight this one for the GIL
    on every message and cost several times the CPU of the publishing itself.
    """
    inflight = Inflight()
    client = connect(job, inflight)
    connected.release()
    go.wait()
    started, cpu0 = time.time(), cpu_seconds()
    sent = publish_all(job, client, inflight)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while inflight.count > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"publisher {job.index}: PUBACKs missing after {DRAIN_TIMEOUT_S:.0f} s")
        pump(client, 0.1)
    finished, cpu = time.time(), cpu_seconds() - cpu0
    client.disconnect()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reports.put(PublisherReport(job.index, sent, started, finished, cpu, peak))


def publish_all(job: PublisherJob, client: mqtt.Client, inflight: Inflight) -> int:
    clock = workload.IsoClock()
    names = workload.point_names(job.points)
    mine = workload.device_indexes(job.index, job.publishers, job.devices)
    topics = {d: workload.topic(d, job.tenants) for d in mine}
    interval = 1.0 / job.rate if job.rate > 0 else 0.0
    t0 = time.monotonic()
    sent = 0
    for index, device in workload.message_indexes(job.index, job.publishers, job.devices, job.messages):
        if interval and sent % 16 == 0:
            while (ahead := t0 + sent * interval - time.monotonic()) > 0:
                pump(client, ahead)
        while inflight.count >= job.window:
            pump(client, 1.0)
        if sent % ACK_POLL_EVERY == 0:
            pump(client, 0)
        ts = clock.stamp(device, time.time_ns() // 1_000_000)
        if workload.is_invalid(index, job.invalid):
            payload = workload.invalid(ts, index)
        else:
            payload = workload.telemetry(ts, names, index)
        inflight.count += 1
        client.publish(topics[device], payload, qos=1)
        sent += 1
    return sent

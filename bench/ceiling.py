"""The bare MQTT ceiling: a subscriber process that only counts and acknowledges (QoS 1).

It does what the listener's MQTT side must do at the least (receive, acknowledge) and nothing
else, so its rate is the most the broker and one Python MQTT client can move on this machine.
It reads the way the listener does (`listener.mqtt.BatchReadingClient`: paho, with our own
framing of PUBLISH packets), so the ratio ours/ceiling measures what chunking, Redis and the
workers cost, not a difference between two MQTT clients.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from bench.workload import TOPIC_FILTER
from listener.mqtt import BatchReadingClient, PublishHandler

RECEIVE_MAXIMUM = 3200  # what the listener asks for with its default chunk size
ACK_EVERY = 64  # PUBACKs written together


@dataclass(frozen=True)
class CounterJob:
    host: str
    port: int
    client_id: str
    session_expiry_s: int
    expected: int


@dataclass(frozen=True)
class CounterReport:
    received: int
    first: float
    last: float
    cpu_s: float
    peak_rss_kb: int


def run(
    job: CounterJob, count: Synchronized[int], subscribed: Event, stop: Event, reports: Queue[CounterReport]
) -> None:
    """Process entry point: subscribe, count until `expected` arrived or `stop` is set."""
    state = {"n": 0, "first": 0.0, "last": 0.0}
    unacked: list[int] = []

    def on_publish_packet(_topic: bytes, _payload: bytes, mid: int, _qos: int) -> None:
        n = state["n"] = state["n"] + 1
        unacked.append(mid)
        if n == 1:
            state["first"] = time.time()
        if n % ACK_EVERY == 0 or n >= job.expected:
            client.puback_all(unacked)
            unacked.clear()
            count.value = int(n)
            state["last"] = time.time()

    def on_subscribe(*_args: Any) -> None:
        subscribed.set()

    client = make_client(job, on_publish_packet, on_subscribe)
    stop.wait()
    client.disconnect()
    client.loop_stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    reports.put(
        CounterReport(
            int(state["n"]), state["first"], state["last"], usage.ru_utime + usage.ru_stime, usage.ru_maxrss
        )
    )


def make_client(job: CounterJob, on_publish_packet: PublishHandler, on_subscribe: Any) -> BatchReadingClient:
    client = BatchReadingClient(CallbackAPIVersion.VERSION2, client_id=job.client_id, protocol=mqtt.MQTTv5,
                                manual_ack=True)
    client.on_publish_packet = on_publish_packet
    client.on_subscribe = on_subscribe
    client.on_connect = lambda c, *_a: c.subscribe([(TOPIC_FILTER, SubscribeOptions(qos=1))])
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = job.session_expiry_s
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    client.connect(job.host, job.port, 60, clean_start=False, properties=props)
    client.loop_start()
    return client

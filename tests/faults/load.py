"""A steady load of devices publishing at QoS 1, and the exact final state it must leave behind.

Message `i` of a plan is fully determined by `i`: its tenant, device and timestamp make every
(tenant, device, point, ts) key unique, so the expected rows per tenant are known in advance;
about 1% are invalid, each with a unique payload, so the DLQ must hold exactly those bytes.
Publishers behave like devices: paho keeps every QoS 1 message until its PUBACK and publishes
it again after a reconnect, so a broker restart loses nothing a device was told was received.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support import query, unique, wait_until

BASE_TS = datetime(2025, 10, 7, tzinfo=UTC)
INVALID_REASONS = ("invalid_json", "validation_error", "unknown_schema")
INFLIGHT = 1_000  # unacknowledged publishes per device connection


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    tenant: str
    reason: str | None  # None: valid


@dataclass(frozen=True)
class LoadPlan:
    prefix: str  # the first topic level; the listener subscribes to `{prefix}/+/+/+/telem`
    messages: int = 20_000
    rate: float = 3_000.0  # messages per second, all publishers together
    tenants: int = 8
    devices: int = 50  # per tenant
    points: int = 5
    invalid_every: int = 100
    run: str = field(default_factory=lambda: unique("r"))

    def message(self, i: int) -> Message:
        tenant = f"{self.run}-t{i % self.tenants}"
        device = f"d{(i // self.tenants) % self.devices}"
        step = i // (self.tenants * self.devices)
        ts = (BASE_TS + timedelta(seconds=step)).isoformat().replace("+00:00", "Z")
        topic = f"{self.prefix}/{tenant}/site/{device}/telem"
        reason = self.reason(i)
        return Message(topic, self.payload(i, ts, reason), tenant, reason)

    def reason(self, i: int) -> str | None:
        if i % self.invalid_every != self.invalid_every // 2:
            return None
        return INVALID_REASONS[(i // self.invalid_every) % len(INVALID_REASONS)]

    def payload(self, i: int, ts: str, reason: str | None) -> bytes:
        if reason == "invalid_json":
            return f'{{"schema": "v1", "ts": "{ts}", "seq": {i}, broken'.encode()
        if reason == "unknown_schema":
            return orjson.dumps({"seq": i, "ts": ts})
        if reason == "validation_error":
            wrong = [{"name": "p0", "t": "float", "v": f"x{i}"}]  # a string where a float belongs
            return orjson.dumps({"schema": "v1", "ts": ts, "points": wrong})
        points = [{"name": f"p{p}", "t": "float", "v": float(i)} for p in range(self.points)]
        return orjson.dumps({"schema": "v1", "ts": ts, "points": points, "meta": {"seq": i}})

    def expected(self) -> Expected:
        rows: Counter[str] = Counter()
        value_sum = 0.0
        dead: list[tuple[str, bytes, str]] = []
        for i in range(self.messages):
            m = self.message(i)
            if m.reason is None:
                rows[m.tenant] += self.points
                value_sum += float(i) * self.points
            else:
                dead.append((m.topic, m.payload, m.reason))
        return Expected(dict(rows), value_sum, sorted(dead))


@dataclass(frozen=True)
class Expected:
    rows_by_tenant: dict[str, int]
    value_sum: float
    dead: list[tuple[str, bytes, str]]  # (topic, payload, reason), sorted

    @property
    def rows(self) -> int:
        return sum(self.rows_by_tenant.values())

    def dead_by_reason(self) -> dict[str, int]:
        return dict(Counter(reason for _, _, reason in self.dead))


class Device(threading.Thread):
    """One MQTT connection publishing every `stride`-th message of the plan from `first`, on schedule."""

    def __init__(self, plan: LoadPlan, host: str, port: int, first: int, stride: int) -> None:
        super().__init__(name=f"device-{first}", daemon=True)
        self.plan = plan
        self.indices = range(first, plan.messages, stride)
        self.rate = plan.rate / stride
        self.infos: list[mqtt.MQTTMessageInfo] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("faults-device-"),
                                  protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(INFLIGHT)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 2)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        self.client.connect(host, port, 30, clean_start=True, properties=props)
        self.client.loop_start()

    def run(self) -> None:
        started = time.monotonic()
        for n, i in enumerate(self.indices):
            delay = started + n / self.rate - time.monotonic()
            if delay > 0.002:
                time.sleep(delay)
            m = self.plan.message(i)
            # While disconnected paho queues the message (rc NO_CONN) and sends it after reconnecting.
            self.infos.append(self.client.publish(m.topic, m.payload, qos=1))

    def acknowledged(self) -> int:
        return sum(1 for info in self.infos if info._published)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Load:
    """`plan.messages` messages at `plan.rate` from several device connections, in the background."""

    def __init__(self, plan: LoadPlan, port: int, connections: int = 2, host: str = "127.0.0.1") -> None:
        self.plan = plan
        self.devices = [Device(plan, host, port, k, connections) for k in range(connections)]
        self.started = 0.0

    def start(self) -> Load:
        self.started = time.monotonic()
        for d in self.devices:
            d.start()
        return self

    @property
    def published(self) -> int:
        return sum(len(d.infos) for d in self.devices)

    def wait_published(self, fraction: float, timeout: float = 120) -> None:
        """Until `fraction` of the plan has been handed to the devices: "mid-load" for a fault."""
        target = int(self.plan.messages * fraction)
        wait_until(lambda: self.published >= target, timeout, interval=0.01,
                   what=f"{target} messages published")

    def finish(self, timeout: float = 120) -> float:
        """Wait until every message was published and acknowledged by the broker; the seconds it took."""
        for d in self.devices:
            d.join(timeout)
        total = self.plan.messages
        wait_until(lambda: sum(d.acknowledged() for d in self.devices) == total, timeout, interval=0.1,
                   what=f"PUBACKs for all {total} messages")
        for d in self.devices:
            d.close()
        return time.monotonic() - self.started

    def close(self) -> None:
        for d in self.devices:
            d.close()


def stored_counts(database_url: str) -> tuple[int, int]:
    rows = query(database_url,
                 "SELECT (SELECT count(*) FROM ts_measure), (SELECT count(*) FROM ingest_errors)")
    return int(rows[0][0]), int(rows[0][1])


def wait_for_everything(database_url: str, expected: Expected, timeout: float,
                        drained: Callable[[], bool] | None = None) -> None:
    """Until the tables hold at least what is expected (exactness is checked afterwards)."""
    want = (expected.rows, len(expected.dead))
    wait_until(lambda: stored_counts(database_url) >= want and (drained is None or drained()), timeout,
               interval=0.5, what=f"{want[0]} rows and {want[1]} dead letters")


def assert_exact_state(database_url: str, expected: Expected, dead_copies_allowed: int = 0) -> int:
    """Every expected row once, nothing else; every invalid message in the DLQ, bytes intact.

    `dead_copies_allowed`: where MQTT itself delivers a message twice (QoS 1 is at least once: a
    PUBACK lost when the broker or the listener dies), the copy is a new message to the DLQ. Such
    copies are counted and returned; each must be an exact copy of an expected dead letter.
    """
    by_tenant = dict(query(database_url, "SELECT tenant_id, count(*) FROM ts_measure GROUP BY 1"))
    assert by_tenant == expected.rows_by_tenant
    duplicates = query(database_url, "SELECT tenant_id, device_id, point_id, ts, count(*) FROM ts_measure "
                       "GROUP BY 1, 2, 3, 4 HAVING count(*) > 1 LIMIT 5")
    assert duplicates == []
    (value_sum,), = query(database_url, "SELECT sum(v_num) FROM ts_measure")
    assert value_sum == expected.value_sum  # the rows carry the values that were sent
    dead_keys = query(database_url, "SELECT chunk_id, chunk_seq, count(*) FROM ingest_errors "
                      "GROUP BY 1, 2 HAVING count(*) > 1 LIMIT 5")
    assert dead_keys == []  # no task added its dead letters twice
    dead = sorted((topic, bytes(payload), reason) for topic, payload, reason in
                  query(database_url, "SELECT topic, payload, reason FROM ingest_errors"))
    assert sorted(set(dead)) == expected.dead  # every invalid message, with its bytes and reason
    copies = len(dead) - len(expected.dead)
    assert copies <= dead_copies_allowed, f"{copies} dead letters are MQTT-level copies"
    return copies

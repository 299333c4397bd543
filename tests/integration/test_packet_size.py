"""The shipped broker configuration and the listener agree on the largest packet.

A Mosquitto of the test's own runs `deploy/mosquitto/local.conf` as shipped (on a free port), with
a listener and a worker at their default sizes: every payload the broker takes, up to its
`max_packet_size`, reaches the DLQ as `payload_too_large` with its exact bytes. Were the
listener's MQTT_MAX_PACKET_BYTES smaller than the broker's limit, the broker would drop the
largest ones for the listener without a word.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from ingest_tasks.settings import Settings
from tests.conftest import fresh_redis_db
from tests.faults.services import accepts_connections, scratch_dir
from tests.support import (
    REDIS_HOST,
    ROOT,
    Process,
    free_port,
    publisher,
    query,
    service_env,
    start_listener,
    start_worker,
    unique,
    wait_until,
)

pytestmark = pytest.mark.integration

MAX_PACKET: int = Settings.model_fields["mqtt_max_packet_bytes"].default


@dataclass
class Shipped:
    database_url: str
    mqtt_port: int
    prefix: str


@pytest.fixture(scope="module")
def shipped_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Mosquitto with the shipped local.conf; only its port and data directory are this test's."""
    log_dir = tmp_path_factory.mktemp("shipped-mosquitto")
    port = free_port()
    directory = scratch_dir("shipped-mosquitto-", owner="mosquitto")
    shipped = (ROOT / "deploy" / "mosquitto" / "local.conf").read_text(encoding="utf-8")
    conf = shipped.replace("@DATA_DIR@", f"{directory}/").replace("listener 1883 ", f"listener {port} ")
    assert f"listener {port} " in conf and f"max_packet_size {MAX_PACKET}\n" in conf
    (directory / "mosquitto.conf").write_text(conf, encoding="utf-8")
    proc = Process(unique("mosquitto-"), ["mosquitto", "-c", str(directory / "mosquitto.conf")], {}, log_dir)
    try:
        wait_until(lambda: accepts_connections(port) or proc.popen.poll() is not None, 15, what="mosquitto")
        assert proc.popen.poll() is None, proc.log()
        yield port
    finally:
        proc.kill_group()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def shipped(shipped_broker: int, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shipped]:
    log_dir: Path = tmp_path_factory.mktemp("shipped-pipeline")
    db_index = fresh_redis_db()
    prefix = unique("ts")
    env = service_env(database_url, db_index, prefix, MQTT_URL=f"mqtt://127.0.0.1:{shipped_broker}")
    assert "MQTT_MAX_PACKET_BYTES" not in env and "INGEST_MAX_PAYLOAD_BYTES" not in env  # the defaults
    worker = start_worker(env, log_dir)
    listener = start_listener(env, log_dir)
    yield Shipped(database_url, shipped_broker, prefix)
    listener.stop()
    worker.stop()
    redis.Redis(host=REDIS_HOST, port=6379, db=db_index).flushdb()


def largest_payload(topic: str) -> int:
    """The payload that makes a QoS 1 MQTT 5 PUBLISH (no properties) exactly MAX_PACKET bytes:
    1 fixed-header byte, 3 of remaining length, topic length 2 + topic, packet id 2, properties 1."""
    return MAX_PACKET - 1 - 3 - 2 - len(topic.encode()) - 2 - 1


@pytest.mark.parametrize("size", [
    pytest.param(900 * 1024, id="900 KiB"),
    pytest.param(None, id="the largest packet the shipped broker takes"),
])
def test_a_payload_over_the_limit_but_within_the_packet_size_is_dead_lettered_byte_exact(
    shipped: Shipped, size: int | None
) -> None:
    tenant = unique("t")
    topic = f"{shipped.prefix}/{tenant}/s1/d1/telem"
    payload = os.urandom(size if size is not None else largest_payload(topic))
    with publisher("127.0.0.1", shipped.mqtt_port) as pub:
        pub.publish(topic, payload)

    def dead_letters() -> list[tuple[object, ...]]:
        return query(shipped.database_url, "SELECT topic, payload, reason, detail FROM ingest_errors "
                     "WHERE tenant_id = %s", (tenant,))

    ((stored_topic, stored, reason, detail),) = wait_until(dead_letters, 60, what="the dead letter")
    assert (stored_topic, reason) == (topic, "payload_too_large")
    assert stored == payload
    assert "INGEST_MAX_PAYLOAD_BYTES" in str(detail)

"""Helpers for integration tests: real processes, a real broker, polling with deadlines.

Nothing here imitates a service: processes are the real `python -m listener` and
`celery -A ingest_tasks worker`, talking to the real PostgreSQL, Redis and Mosquitto.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import kombu.compression
import msgpack
import orjson
import paho.mqtt.client as mqtt
import psycopg
import redis
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from migrations.runner import apply_pending

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PG_ADMIN = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST = "127.0.0.1"
MQTT_HOST = "127.0.0.1"
MQTT_PORT = 1883
TEST_SESSION_EXPIRY_S = 60  # test clients never leave long-lived sessions on the shared broker

T = TypeVar("T")


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def wait_until(probe: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.05,
               what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class Process:
    """A real service process with its output in a log file we can wait on."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 30.0, count: int = 1) -> None:
        def seen() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()[-3000:]}")
            return self.log().count(needle) >= count

        wait_until(seen, timeout, what=f"{needle!r} in the {self.name} log")

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def kill_group(self) -> None:
        """SIGKILL the process and every child it started."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise AssertionError(f"{self.name} did not stop on SIGTERM:\n{self.log()[-3000:]}") from None
        finally:
            self._log.close()


def service_env(database_url: str, redis_db: int, topic_prefix: str, **extra: str) -> dict[str, str]:
    topics = ",".join(f"{topic_prefix}/+/+/+/{kind}" for kind in ("telem", "ack", "event"))
    env = {
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": f"redis://{REDIS_HOST}:6379/{redis_db}",
        "MQTT_URL": f"mqtt://{MQTT_HOST}:{MQTT_PORT}",
        "MQTT_TOPICS": topics,
        "MQTT_CLIENT_ID": unique("test-listener-"),
        "MQTT_SESSION_EXPIRY": str(TEST_SESSION_EXPIRY_S),
        "INGEST_BATCH_MS": "100",
        "METRICS_PORT": "0",
        "WORKER_METRICS_PORT": "0",
        "LOG_LEVEL": "INFO",
    }
    env.update(extra)
    return env


def start_listener(env: Mapping[str, str], log_dir: Path, name: str = "listener") -> Process:
    proc = Process(name, [str(VENV_BIN / "python"), "-m", "listener"], env, log_dir)
    proc.wait_for_log("mqtt subscribed")
    return proc


def start_worker(env: Mapping[str, str], log_dir: Path, name: str = "worker", concurrency: int = 2) -> Process:
    argv = [str(VENV_BIN / "celery"), "-A", "ingest_tasks", "worker", "--loglevel", "INFO",
            "-c", str(concurrency), "-n", f"{unique(name + '-')}@%h", "--without-gossip", "--without-mingle"]
    proc = Process(name, argv, env, log_dir)
    proc.wait_for_log("ready.")
    return proc


class Publisher:
    """A device stand-in: a real MQTT client publishing at QoS 1 and waiting for each PUBACK."""

    def __init__(self, host: str = MQTT_HOST, port: int = MQTT_PORT, username: str | None = None,
                 password: str | None = None, ca_file: str | None = None) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("test-pub-"),
                                  protocol=mqtt.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_file is not None:  # TLS, trusting this CA
            self.client.tls_set(ca_certs=ca_file)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        self.client.connect(host, port, 30, clean_start=True, properties=props)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str | dict[str, Any], qos: int = 1) -> None:
        data = orjson.dumps(payload) if isinstance(payload, dict) else payload
        info = self.client.publish(topic, data, qos=qos)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def publisher(host: str = MQTT_HOST, port: int = MQTT_PORT, **login: str) -> Iterator[Publisher]:
    """A connected Publisher, closed afterwards; `login` takes username, password, ca_file."""
    pub = Publisher(host, port, **login)
    try:
        yield pub
    finally:
        pub.close()


def query(database_url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Read as the operator (superuser: RLS does not hide rows from it)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(sql.encode(), params).fetchall()


@contextmanager
def fresh_database(prefix: str = "traksense_test_") -> Iterator[str]:
    """A new database made by the project's own migrations (so they are tested on every run),
    dropped afterwards; its URL."""
    name = unique(prefix)
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    apply_pending(url)
    try:
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def execute(database_url: str, sql: str) -> None:
    """Run a statement as the operator (schema changes a test makes on its own database)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.encode())


def count(database_url: str, table: str, tenant: str) -> int:
    rows = query(database_url, f"SELECT count(*) FROM {table} WHERE tenant_id = %s", (tenant,))
    return int(rows[0][0])


def queued_chunks(redis_url: str, queue: str = "ingest") -> list[tuple[str, list[list[Any]]]]:
    """The chunks waiting in Redis, oldest first, decoded from Celery's message format."""
    client = redis.Redis.from_url(redis_url)
    raw = client.lrange(queue, 0, -1)
    chunks = []
    for item in reversed(raw):  # kombu LPUSHes and consumers BRPOP: the tail is the oldest
        envelope = orjson.loads(item)
        body = base64.b64decode(envelope["body"])
        if "compression" in envelope["headers"]:
            body = kombu.compression.decompress(body, envelope["headers"]["compression"])
        args, _kwargs, _embed = msgpack.unpackb(body, raw=False)
        chunks.append((args[0], args[1]))
    return chunks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """A /metrics page as {'name{label="v"}': value}, samples of every family."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples

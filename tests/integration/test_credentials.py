"""Credentials and TLS, end to end with real processes: each secret works and never reaches a log.

Each test owns the service it configures with a secret (a Mosquitto with a password file or a TLS
listener, a redis-server with `requirepass`, a login role with a password on the shared
PostgreSQL), on a free port, so the shared services stay as they are. Payload content is checked
too: with `LOG_LEVEL=DEBUG`, no byte of a message's payload reaches the listener's or worker's log.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import orjson
import psycopg
import pytest
import redis
from psycopg import sql

from tests.faults.services import accepts_connections, scratch_dir
from tests.support import (
    VENV_BIN,
    Process,
    Publisher,
    free_port,
    publisher,
    query,
    service_env,
    unique,
    wait_until,
)

pytestmark = pytest.mark.integration

MQTT_USER = "ingest"
MQTT_PASSWORD = "s3cret-pw"
WRONG_MQTT_PASSWORD = "wr0ng-pw-guess"
REDIS_PASSWORD = "r3dis-pw"
PG_PASSWORD = "pg-s3cret"


# --- services the tests own ---------------------------------------------------------------------


@dataclass
class Mosquitto:
    port: int
    dir: Path
    proc: Process


def give_to_mosquitto(*paths: Path) -> None:
    """Mosquitto drops root for its own user before reading password files and keys."""
    entry = pwd.getpwnam("mosquitto")
    for path in paths:
        os.chown(path, entry.pw_uid, entry.pw_gid)
        path.chmod(0o600)


@contextmanager
def own_mosquitto(log_dir: Path, config: str, files: Mapping[str, Path] | None = None) -> Iterator[Mosquitto]:
    """A Mosquitto on a free port: `config` is the listener's options (`{dir}` is its directory)."""
    port = free_port()
    directory = scratch_dir("cred-mosquitto-", owner="mosquitto")
    try:
        for name, source in (files or {}).items():
            shutil.copyfile(source, directory / name)
            give_to_mosquitto(directory / name)
        conf = directory / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\npersistence false\n" + config.format(dir=directory))
        proc = Process(unique("mosquitto-"), ["mosquitto", "-c", str(conf)], {}, log_dir)
        try:
            wait_until(lambda: accepts_connections(port) or _exited(proc), 15, what=f"mosquitto on :{port}")
            assert proc.popen.poll() is None, proc.log()
            yield Mosquitto(port, directory, proc)
        finally:
            proc.kill_group()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _exited(proc: Process) -> bool:
    return proc.popen.poll() is not None


@contextmanager
def own_redis(log_dir: Path, password: str) -> Iterator[int]:
    """A redis-server that requires `password`, on a free port (no persistence)."""
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--requirepass", password,
            "--save", "", "--appendonly", "no", "--dir", str(log_dir)]
    proc = Process(unique("redis-"), argv, {}, log_dir)
    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_until(up, 15, what=f"redis on :{port}")
        yield port
    finally:
        proc.kill_group()


def make_tls_files(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate it signed for 127.0.0.1, made with the openssl CLI."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=traksense test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")
    (directory / "san.ext").write_text("subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.pem")
    return {name: directory / name for name in ("ca.pem", "server.pem", "server.key")}


@contextmanager
def login_role(database_url: str, password: str) -> Iterator[str]:
    """A login role with a password, allowed to become the writer role; dropped afterwards."""
    role = unique("ingest_login_")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        conn.execute(sql.SQL("GRANT ingest_writer TO {}").format(sql.Identifier(role)))
    try:
        yield role
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


# --- the processes under test -------------------------------------------------------------------


def launch_listener(env: Mapping[str, str], log_dir: Path) -> Process:
    return Process(unique("listener-"), [str(VENV_BIN / "python"), "-m", "listener"], env, log_dir)


def launch_worker(env: Mapping[str, str], log_dir: Path, loglevel: str = "INFO") -> Process:
    argv = [str(VENV_BIN / "celery"), "-A", "ingest_tasks", "worker", "--loglevel", loglevel, "-c", "1",
            "-n", f"{unique('cred-worker-')}@%h", "--without-gossip", "--without-mingle"]
    return Process(unique("worker-"), argv, env, log_dir)


@contextmanager
def pipeline(env: Mapping[str, str], log_dir: Path, worker_loglevel: str = "INFO") -> Iterator[tuple[Process, Process]]:
    """Listener and worker, started together (both must come up), stopped afterwards."""
    listener = launch_listener(env, log_dir)
    worker = launch_worker(env, log_dir, worker_loglevel)
    try:
        listener.wait_for_log("mqtt subscribed")
        worker.wait_for_log("ready.")
        yield listener, worker
    finally:
        for proc in (listener, worker):
            with suppress(AssertionError):
                proc.stop()


def telemetry(value: float | str = 7.5) -> dict[str, object]:
    kind = "text" if isinstance(value, str) else "float"
    return {"schema": "v1", "ts": "2025-10-07T15:30:00Z", "points": [{"name": "p", "t": kind, "v": value}]}


def wait_for_rows(database_url: str, tenant: str, n: int = 1) -> None:
    def landed() -> bool:
        rows = query(database_url, "SELECT count(*) FROM ts_measure WHERE tenant_id = %s", (tenant,))
        return int(rows[0][0]) >= n

    wait_until(landed, 30, what=f"{n} row(s) of tenant {tenant}")


def one_message_lands(pub: Publisher, env: Mapping[str, str], database_url: str) -> None:
    """Publish one telemetry message for a tenant of its own and wait until its row is stored."""
    tenant = unique("t")
    pub.publish(f"{prefix_of(env)}/{tenant}/s1/d1/telem", telemetry())
    wait_for_rows(database_url, tenant)


def assert_not_logged(secret: str, *procs: Process) -> None:
    for proc in procs:
        assert secret not in proc.log(), f"{secret!r} appears in the {proc.name} log"


def own_env(database_url: str, redis_db: int, **extra: str) -> dict[str, str]:
    """The services' environment, with a topic prefix of the test's own."""
    return service_env(database_url, redis_db, unique("ts"), **extra)


def prefix_of(env: Mapping[str, str]) -> str:
    return env["MQTT_TOPICS"].split("/", 1)[0]


# --- MQTT username and password -----------------------------------------------------------------


@pytest.fixture
def password_mosquitto(log_dir: Path, tmp_path: Path) -> Iterator[Mosquitto]:
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), MQTT_USER, MQTT_PASSWORD],
                   check=True, capture_output=True, timeout=30)
    config = "allow_anonymous false\npassword_file {dir}/passwd\n"
    with own_mosquitto(log_dir, config, {"passwd": passwd}) as broker:
        yield broker


def test_mqtt_username_and_password_work_and_are_never_logged(
    password_mosquitto: Mosquitto, database_url: str, redis_db: int, log_dir: Path
) -> None:
    port = password_mosquitto.port
    env = own_env(database_url, redis_db, MQTT_URL=f"mqtt://{MQTT_USER}:{MQTT_PASSWORD}@127.0.0.1:{port}")
    login = {"username": MQTT_USER, "password": MQTT_PASSWORD}
    with pipeline(env, log_dir) as (listener, worker), publisher("127.0.0.1", port, **login) as pub:
        one_message_lands(pub, env, database_url)
    assert_not_logged(MQTT_PASSWORD, listener, worker)


def test_a_wrong_mqtt_password_is_refused_clearly_and_the_listener_keeps_trying(
    password_mosquitto: Mosquitto, database_url: str, redis_db: int, log_dir: Path
) -> None:
    port = password_mosquitto.port
    env = own_env(database_url, redis_db, MQTT_URL=f"mqtt://{MQTT_USER}:{WRONG_MQTT_PASSWORD}@127.0.0.1:{port}")
    listener = launch_listener(env, log_dir)
    try:
        listener.wait_for_log("mqtt connect refused", count=2)  # refused, then refused again on retry
        assert listener.popen.poll() is None
    finally:
        listener.stop()
    log = listener.log()
    refusals = [line for line in log.splitlines() if "mqtt connect refused" in line]
    assert all("check the user name and password in MQTT_URL" in line for line in refusals), log
    assert all("Bad user name or password" in line or "Not authorized" in line for line in refusals), log
    assert "mqtt subscribed" not in log and "mqtt connected" not in log, log
    assert_not_logged(WRONG_MQTT_PASSWORD, listener)


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture
def tls_mosquitto(log_dir: Path, tmp_path: Path) -> Iterator[tuple[Mosquitto, Path]]:
    files = make_tls_files(tmp_path)
    config = "allow_anonymous true\ncafile {dir}/ca.pem\ncertfile {dir}/server.pem\nkeyfile {dir}/server.key\n"
    with own_mosquitto(log_dir, config, files) as broker:
        yield broker, files["ca.pem"]


def test_mqtts_with_a_ca_file_delivers(
    tls_mosquitto: tuple[Mosquitto, Path], database_url: str, redis_db: int, log_dir: Path
) -> None:
    broker, ca = tls_mosquitto
    env = own_env(database_url, redis_db, MQTT_URL=f"mqtts://127.0.0.1:{broker.port}", MQTT_CA_FILE=str(ca))
    with pipeline(env, log_dir), publisher("127.0.0.1", broker.port, ca_file=str(ca)) as pub:
        one_message_lands(pub, env, database_url)


def test_mqtts_without_the_ca_file_refuses_the_unknown_certificate_and_says_so(
    tls_mosquitto: tuple[Mosquitto, Path], database_url: str, redis_db: int, log_dir: Path
) -> None:
    broker, _ca = tls_mosquitto
    env = own_env(database_url, redis_db, MQTT_URL=f"mqtts://127.0.0.1:{broker.port}")
    listener = launch_listener({**env, "MQTT_CA_FILE": ""}, log_dir)  # the system's CAs only
    try:
        listener.wait_for_log("certificate verify failed")
        assert listener.popen.poll() is None
    finally:
        listener.stop()
    log = listener.log()
    assert "mqtt cannot connect to 127.0.0.1" in log, log
    assert "mqtt connected" not in log and "mqtt subscribed" not in log, log


# --- Redis password -----------------------------------------------------------------------------


def test_a_redis_password_works_and_is_never_logged(
    database_url: str, redis_db: int, log_dir: Path
) -> None:
    with own_redis(log_dir, REDIS_PASSWORD) as port:
        env = own_env(database_url, redis_db, CELERY_BROKER_URL=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0")
        with pipeline(env, log_dir) as (listener, worker), publisher() as pub:
            one_message_lands(pub, env, database_url)
    assert_not_logged(REDIS_PASSWORD, listener, worker)


# --- database password --------------------------------------------------------------------------


def test_a_database_password_is_never_logged(database_url: str, redis_db: int, log_dir: Path) -> None:
    # The shared PostgreSQL trusts local connections, so the password is not checked here: what
    # this shows is that a DATABASE_URL with one works and that it stays out of the logs.
    with login_role(database_url, PG_PASSWORD) as role:
        host, database = database_url.split("@", 1)[1].rsplit("/", 1)
        env = own_env(database_url, redis_db, DATABASE_URL=f"postgresql://{role}:{PG_PASSWORD}@{host}/{database}")
        with pipeline(env, log_dir) as (listener, worker):
            with publisher() as pub:
                one_message_lands(pub, env, database_url)
            sessions = query(database_url, "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,))
            assert sessions[0][0] >= 1  # the worker logged in as the role of the URL
    assert_not_logged(PG_PASSWORD, listener, worker)


# --- payload content ----------------------------------------------------------------------------


def test_no_payload_content_reaches_the_logs_even_at_debug(database_url: str, redis_db: int, log_dir: Path) -> None:
    invalid_marker = unique("INVALIDMARK")
    valid_marker = unique("VALIDMARK")
    invalid = b"{" + (invalid_marker.encode() + b" ") * 500 + b"\x00\n" + invalid_marker.encode()
    assert len(invalid) > 10_000
    env = own_env(database_url, redis_db, LOG_LEVEL="DEBUG")
    tenant = unique("t")
    with pipeline(env, log_dir, worker_loglevel="DEBUG") as (listener, worker):
        with publisher() as pub:
            pub.publish(f"{prefix_of(env)}/{tenant}/s1/bad/telem", invalid)
            pub.publish(f"{prefix_of(env)}/{tenant}/s1/good/telem", orjson.dumps(telemetry(valid_marker)))
        wait_for_rows(database_url, tenant)

        def dead() -> list[tuple[object, ...]]:
            return query(database_url, "SELECT payload, reason FROM ingest_errors WHERE tenant_id = %s", (tenant,))

        rows = wait_until(dead, 30, what="the DLQ row")
        time.sleep(0.5)  # let any log line about the chunk be written
    assert rows == [(invalid, "invalid_json")]
    stored = query(database_url, "SELECT v_text FROM ts_measure WHERE tenant_id = %s", (tenant,))
    assert stored == [(valid_marker,)]
    assert "DEBUG" in listener.log() and "DEBUG" in worker.log()  # the level took effect
    for marker in (invalid_marker, valid_marker):
        assert_not_logged(marker, listener, worker)

"""The shipped broker security, end to end: deploy/mosquitto/mosquitto.conf with the dynamic
security plugin, on a Mosquitto of the test's own (its own port and directory), its admin made by
deploy/mosquitto/dynsec-init.sh and its accounts by `python -m ingest_tasks.devices`.

The listener side is the listener's own MQTT class (`listener.mqtt.Subscriber`, persistent
session, client id `traksense-ingest`, manual acknowledgements), acknowledging what it receives.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ingest_tasks.settings import DEFAULT_TOPICS, parse_mqtt_url
from listener.mqtt import Delivery, Subscriber, SubscriberConfig
from tests.faults.services import accepts_connections, scratch_dir
from tests.support import (
    ROOT,
    TEST_SESSION_EXPIRY_S,
    VENV_BIN,
    Process,
    count,
    free_port,
    query,
    service_env,
    start_listener,
    start_worker,
    unique,
    wait_until,
)

pytestmark = pytest.mark.integration

SHIPPED_CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
INIT_SCRIPT = ROOT / "deploy" / "mosquitto" / "dynsec-init.sh"
DEBIAN_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
LISTENER_ID = "traksense-ingest"
REFUSED_LOGIN = (134, 135)  # MQTT v5: bad user name or password, not authorized


# --- the broker under test ----------------------------------------------------------------------


@dataclass
class Broker:
    port: int
    dir: Path
    proc: Process
    admin_url: str
    listener_url: str

    def url(self, user: str, password: str) -> str:
        return f"mqtt://{user}:{password}@127.0.0.1:{self.port}"


def extra_listeners(directory: Path) -> Path:
    """An empty folder for the shipped `include_dir` (Mosquitto refuses one that is missing)."""
    folder = directory / "conf.d"
    folder.mkdir(exist_ok=True)
    return folder


def shipped_config(port: int, directory: Path) -> str:
    """mosquitto.conf as shipped, with only its paths and port moved to this machine's test broker."""
    text = SHIPPED_CONF.read_text(encoding="utf-8")
    moves = {"listener 1883\n": f"listener {port} 127.0.0.1\n",
             "persistence_location /mosquitto/data/\n": f"persistence_location {directory}/\n",
             "plugin /usr/lib/mosquitto_dynamic_security.so\n": f"plugin {DEBIAN_PLUGIN}\n",
             "plugin_opt_config_file /mosquitto/data/dynamic-security.json\n":
                 f"plugin_opt_config_file {directory}/dynamic-security.json\n",
             # Compose mounts the TLS listener there; this broker needs only plain MQTT.
             "include_dir /mosquitto/conf.d\n": f"include_dir {extra_listeners(directory)}\n"}
    for shipped, here in moves.items():
        assert text.count(shipped) == 1, f"the shipped config no longer has {shipped.strip()!r}"
        text = text.replace(shipped, here)
    return text


def devices(broker: Broker, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m ingest_tasks.devices ARGS` as the broker's admin."""
    full_env = {**os.environ, "MQTT_ADMIN_URL": broker.admin_url, "MQTT_URL": broker.listener_url,
                "MQTT_CLIENT_ID": LISTENER_ID, **env}
    argv = [str(VENV_BIN / "python"), "-m", "ingest_tasks.devices", *args]
    return subprocess.run(argv, check=False, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    directory = scratch_dir("dynsec-mosquitto-", owner="mosquitto")
    admin_password = secrets.token_urlsafe(16)
    (directory / "admin-password").write_text(admin_password + "\n")
    (directory / "admin-password").chmod(0o600)
    init_env = {**os.environ, "DYNSEC_FILE": str(directory / "dynamic-security.json"),
                "MQTT_ADMIN_PASSWORD_FILE": str(directory / "admin-password")}
    subprocess.run(["sh", str(INIT_SCRIPT), "true"], env=init_env, check=True, capture_output=True, timeout=30)
    port = free_port()
    conf = directory / "mosquitto.conf"
    conf.write_text(shipped_config(port, directory))
    proc = Process(unique("dynsec-mosquitto-"), ["mosquitto", "-c", str(conf)], {}, tmp_path)
    try:
        wait_until(lambda: accepts_connections(port) or proc.popen.poll() is not None, 15, what="mosquitto")
        assert proc.popen.poll() is None, proc.log()
        b = Broker(port, directory, proc, "", "")
        b.admin_url, b.listener_url = b.url("admin", admin_password), b.url("ingest", secrets.token_urlsafe(16))
        ok(devices(b, "setup-listener"))
        yield b
        assert proc.popen.poll() is None, "the broker must run throughout"
    finally:
        proc.kill_group()
        shutil.rmtree(directory, ignore_errors=True)


# --- MQTT clients -------------------------------------------------------------------------------


def connect(port: int, client_id: str, username: str | None = None, password: str | None = None,
            clean_start: bool = True) -> tuple[ReasonCode, mqtt.Client]:
    """A client's CONNACK reason, and the client (connected when the reason is success)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if username is not None:
        client.username_pw_set(username, password)
    answer = Answer()
    client.on_connect = lambda _c, _u, _f, reason, _p: answer.put(reason)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0 if clean_start else TEST_SESSION_EXPIRY_S
    client.connect("127.0.0.1", port, 30, clean_start=clean_start, properties=props)
    client.loop_start()
    reason = answer.get("CONNACK")
    if reason.is_failure:
        client.loop_stop()
    return reason, client


class Answer:
    """One value a paho callback hands over from its network thread."""

    def __init__(self) -> None:
        self._values: list[Any] = []
        self._event = threading.Event()

    def put(self, value: Any) -> None:
        self._values.append(value)
        self._event.set()

    def get(self, what: str) -> Any:
        assert self._event.wait(15), f"no {what}"
        return self._values[0]


def refused(port: int, client_id: str, username: str | None = None, password: str | None = None) -> bool:
    reason, client = connect(port, client_id, username, password)
    if not reason.is_failure:
        client.disconnect()
        client.loop_stop()
    return reason.is_failure and reason.value in REFUSED_LOGIN


@dataclass
class Device:
    tenant: str
    device: str
    password: str

    @property
    def username(self) -> str:
        return f"{self.tenant}/{self.device}"

    def topic(self, tenant: str | None = None, device: str | None = None, kind: str = "telem") -> str:
        return f"traksense/{tenant or self.tenant}/s1/{device or self.device}/{kind}"


def add_device(broker: Broker, tenant: str, device: str) -> Device:
    out = ok(devices(broker, "add-device", tenant, device, "--json"))
    return Device(tenant, device, parse_json_line(out)["password"])


def parse_json_line(text: str) -> dict[str, Any]:
    value = json.loads(text.strip().splitlines()[-1])
    assert isinstance(value, dict)
    return value


def publish(client: mqtt.Client, topic: str, payload: str) -> ReasonCode:
    """Publish at QoS 1 and return the PUBACK's reason (failure when the broker refused it)."""
    reasons: dict[int, ReasonCode] = {}

    def on_publish(_c: mqtt.Client, _u: object, mid: int, reason: ReasonCode, _p: Properties) -> None:
        reasons[mid] = reason

    client.on_publish = on_publish
    info = client.publish(topic, payload, qos=1)
    info.wait_for_publish(10)
    wait_until(lambda: info.mid in reasons, 10, what="PUBACK")
    return reasons[info.mid]


class ListenerSide:
    """The listener's MQTT session (its real class), acknowledging every message it receives."""

    def __init__(self, url: str, url_file: str = "", shared_group: str = "") -> None:
        self.received: list[Delivery] = []
        config = SubscriberConfig(address=parse_mqtt_url(url), client_id=LISTENER_ID,
                                  topics=tuple(DEFAULT_TOPICS.split(",")), qos=1, shared_group=shared_group,
                                  session_expiry_s=TEST_SESSION_EXPIRY_S, receive_maximum=100, url_file=url_file)
        self.sub = Subscriber(config, self._deliver, time.time)

    def _deliver(self, delivery: Delivery) -> None:
        self.received.append(delivery)
        self.sub.ack(delivery)

    def payloads(self, tenant: str) -> list[str]:
        return [d.payload.decode() for d in list(self.received) if d.topic.split("/")[1] == tenant]

    def __enter__(self) -> ListenerSide:
        self.sub.start()
        wait_until(self.sub.connected.is_set, 15, what="the listener's connection")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.sub.stop()


# --- the tests ----------------------------------------------------------------------------------


def test_an_anonymous_client_and_a_wrong_password_are_refused(broker: Broker) -> None:
    tenant = unique("t")
    ok(devices(broker, "add-tenant", tenant))
    dev = add_device(broker, tenant, "d1")
    assert refused(broker.port, dev.username)
    assert refused(broker.port, dev.username, dev.username, dev.password + "x")
    assert refused(broker.port, dev.username, "nobody", dev.password)
    reason, client = connect(broker.port, dev.username, dev.username, dev.password)
    assert not reason.is_failure, reason
    client.disconnect()
    client.loop_stop()


def test_a_device_cannot_write_or_read_another_tenants_topics(broker: Broker) -> None:
    a, b = unique("ta"), unique("tb")
    for tenant in (a, b):
        ok(devices(broker, "add-tenant", tenant))
    dev = add_device(broker, a, "d1")
    add_device(broker, b, "d1")
    with ListenerSide(broker.listener_url) as listener:
        reason, client = connect(broker.port, dev.username, dev.username, dev.password)
        assert not reason.is_failure, reason
        for topic in (dev.topic(tenant=b), dev.topic(device="d2"), f"traksense/{b}/s1/d1/event", "other/x"):
            denied = publish(client, topic, "forged")
            assert denied.is_failure, f"{topic}: {denied}"
        # Subscribing to B's topics, or to everything, is refused.
        suback = Answer()
        client.on_subscribe = lambda _c, _u, _m, reasons, _p: suback.put(reasons)
        client.subscribe([(f"traksense/{b}/#", 1), ("traksense/#", 1), ("#", 1), ("$share/g/traksense/#", 1)])
        granted = suback.get("SUBACK")
        assert len(granted) == 4 and all(r.is_failure for r in granted), granted
        # Its own topics are published; once that marker is in, nothing earlier can still come.
        assert not publish(client, dev.topic(), "mine").is_failure
        wait_until(lambda: listener.payloads(a), 15, what="the device's own message")
        client.disconnect()
        client.loop_stop()
        assert listener.payloads(a) == ["mine"]
        assert listener.payloads(b) == []
        assert [d.topic for d in listener.received] == [dev.topic()]


def test_no_one_else_can_take_the_listeners_client_id_or_its_messages(broker: Broker) -> None:
    tenant = unique("t")
    ok(devices(broker, "add-tenant", tenant))
    dev = add_device(broker, tenant, "d1")
    listener_user = parse_mqtt_url(broker.listener_url).username
    _, client = connect(broker.port, dev.username, dev.username, dev.password)
    with ListenerSide(broker.listener_url) as listener:
        for n in range(5):
            publish(client, dev.topic(), f"m{n}")
        assert refused(broker.port, LISTENER_ID)  # anonymous
        assert refused(broker.port, LISTENER_ID, dev.username, dev.password)  # a device's own login
        assert refused(broker.port, LISTENER_ID, listener_user, "guessed")
        for n in range(5, 10):
            publish(client, dev.topic(), f"m{n}")
        wait_until(lambda: len(listener.payloads(tenant)) >= 10, 15, what="every message")
        assert listener.payloads(tenant) == [f"m{n}" for n in range(10)]
        assert listener.sub.generation == 1, "the listener's session was never taken over"
    client.disconnect()
    client.loop_stop()


def test_after_a_rotation_the_new_password_works_the_old_one_is_refused_and_nothing_is_lost(broker: Broker) -> None:
    tenant = unique("t")
    ok(devices(broker, "add-tenant", tenant))
    dev = add_device(broker, tenant, "d1")
    with ListenerSide(broker.listener_url) as listener:
        reason, client = connect(broker.port, dev.username, dev.username, dev.password)
        assert not reason.is_failure, reason
        sent = [f"before{n}" for n in range(5)]
        for payload in sent:
            assert not publish(client, dev.topic(), payload).is_failure
        out = ok(devices(broker, "rotate", tenant, "d1", "--json"))
        new_password = parse_json_line(out)["password"]
        assert new_password != dev.password
        wait_until(lambda: not client.is_connected(), 15, what="the old session to be closed")
        client.loop_stop()
        assert refused(broker.port, dev.username, dev.username, dev.password)
        reason, client = connect(broker.port, dev.username, dev.username, new_password)
        assert not reason.is_failure, reason
        after = [f"after{n}" for n in range(5)]
        for payload in after:
            assert not publish(client, dev.topic(), payload).is_failure
        client.disconnect()
        client.loop_stop()
        wait_until(lambda: len(listener.payloads(tenant)) >= 10, 15, what="every message")
        assert listener.payloads(tenant) == sent + after
        assert listener.sub.generation == 1, "the listener ran throughout"


def test_list_disable_enable_and_remove_act_at_once(broker: Broker) -> None:
    tenant = unique("t")
    ok(devices(broker, "add-tenant", tenant))
    dev = add_device(broker, tenant, "d1")
    add_device(broker, tenant, "d2")
    listed = [parse_json_line(line) for line in ok(devices(broker, "list", "--tenant", tenant, "--json")).splitlines()]
    assert [(d["device"], d["enabled"]) for d in listed] == [("d1", True), ("d2", True)]
    assert tenant in ok(devices(broker, "tenants")).split()

    reason, client = connect(broker.port, dev.username, dev.username, dev.password)
    assert not reason.is_failure
    ok(devices(broker, "disable", tenant, "d1"))
    wait_until(lambda: not client.is_connected(), 15, what="the disabled device's session to be closed")
    client.loop_stop()
    assert refused(broker.port, dev.username, dev.username, dev.password)
    listed = [parse_json_line(line) for line in ok(devices(broker, "list", "--tenant", tenant, "--json")).splitlines()]
    assert [(d["device"], d["enabled"]) for d in listed] == [("d1", False), ("d2", True)]

    ok(devices(broker, "enable", tenant, "d1"))
    assert not refused(broker.port, dev.username, dev.username, dev.password)

    ok(devices(broker, "remove", tenant, "d1"))
    assert refused(broker.port, dev.username, dev.username, dev.password)
    listed = [parse_json_line(line) for line in ok(devices(broker, "list", "--tenant", tenant, "--json")).splitlines()]
    assert [d["device"] for d in listed] == ["d2"]


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(("add-device", "{nobody}", "d1"), "devices: unknown tenant {nobody} (add it first",
                 id="unknown tenant"),
    pytest.param(("add-device", "{tenant}", "d1"), "devices: device {tenant}/d1 exists", id="device exists"),
    pytest.param(("add-tenant", "{tenant}"), "devices: tenant {tenant} exists", id="tenant exists"),
    pytest.param(("rotate", "{tenant}", "d9"), "devices: unknown device {tenant}/d9", id="rotate unknown"),
    pytest.param(("remove", "{tenant}", "d9"), "devices: unknown device {tenant}/d9", id="remove unknown"),
    pytest.param(("disable", "{tenant}", "d9"), "devices: unknown device {tenant}/d9", id="disable unknown"),
])
def test_a_refused_operation_is_one_line_and_exit_1(broker: Broker, args: tuple[str, ...], message: str) -> None:
    names = {"tenant": unique("t"), "nobody": unique("nobody")}
    ok(devices(broker, "add-tenant", names["tenant"]))
    add_device(broker, names["tenant"], "d1")
    result = devices(broker, *(a.format(**names) for a in args))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(message.format(**names))
    assert len(result.stderr.splitlines()) == 1


def test_an_admin_login_the_broker_refuses_is_one_line_without_the_secret(broker: Broker) -> None:
    wrong = "Wr0ng-" + secrets.token_urlsafe(8)
    result = devices(broker, "list", MQTT_ADMIN_URL=broker.url("admin", wrong))
    assert result.returncode == 1
    assert result.stderr == "devices: the broker refused the admin login (check MQTT_ADMIN_URL's user and password)\n"
    unreachable = devices(broker, "list", MQTT_ADMIN_URL=f"mqtt://admin:{wrong}@127.0.0.1:{free_port()}")
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("devices: cannot reach the broker at 127.0.0.1:")
    for output in (result.stdout + result.stderr, unreachable.stdout + unreachable.stderr):
        assert wrong not in output


@pytest.mark.parametrize("file_first", [pytest.param(True, id="file, then password"),
                                        pytest.param(False, id="password, then file")])
def test_the_listener_takes_its_rotated_password_from_its_file_at_the_next_connect(
        broker: Broker, file_first: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="listener.mqtt")
    tenant = unique("t")
    ok(devices(broker, "add-tenant", tenant))
    dev = add_device(broker, tenant, "d1")
    url_file = broker.dir / "listener-url"
    url_file.write_text(broker.listener_url + "\n")
    new_url = broker.url("ingest", secrets.token_urlsafe(16))
    _, client = connect(broker.port, dev.username, dev.username, dev.password)
    with ListenerSide(broker.listener_url, url_file=str(url_file)) as listener:
        publish(client, dev.topic(), "m0")
        # Setting the password closes the listener's session; each connect reads the file. Written
        # afterwards, the file is read at a retry after the broker refused the old password.
        if file_first:
            url_file.write_text(new_url + "\n")
        ok(devices(broker, "setup-listener", MQTT_URL=new_url))
        if not file_first:
            wait_until(lambda: "mqtt connect refused" in caplog.text, 15,
                       what="the broker to refuse the listener's old password")
            url_file.write_text(new_url + "\n")
        for n in range(1, 5):
            publish(client, dev.topic(), f"m{n}")
        wait_until(lambda: listener.sub.generation >= 2 and listener.sub.connected.is_set(), 30,
                   what="the listener to reconnect with its new password")
        wait_until(lambda: len(listener.payloads(tenant)) >= 5, 15, what="every message")
        assert listener.payloads(tenant) == [f"m{n}" for n in range(5)]
        assert listener.sub.session_present, "the listener kept its session"
    assert refused(broker.port, LISTENER_ID, "ingest", parse_mqtt_url(broker.listener_url).password)
    client.disconnect()
    client.loop_stop()


TELEMETRY = {"schema": "v1", "ts": "2025-10-07T15:30:00Z", "points": [{"name": "temp", "t": "float", "v": 7.3}]}


def test_through_the_real_listener_and_worker_a_device_lands_rows_only_for_its_own_tenant(
        broker: Broker, database_url: str, redis_db: int, tmp_path: Path) -> None:
    a, b = unique("ta"), unique("tb")
    for tenant in (a, b):
        ok(devices(broker, "add-tenant", tenant))
    dev = add_device(broker, a, "d1")
    url_file = broker.dir / "listener-url"
    url_file.write_text(broker.listener_url + "\n")
    env = service_env(database_url, redis_db, "traksense", MQTT_CLIENT_ID=LISTENER_ID)
    del env["MQTT_URL"]  # the listener's login comes from its file, as in the compose stack
    env["MQTT_URL_FILE"] = str(url_file)
    worker = start_worker(env, tmp_path)
    listener = start_listener(env, tmp_path)
    try:
        _, client = connect(broker.port, dev.username, dev.username, dev.password)
        assert publish(client, dev.topic(tenant=b), json.dumps(TELEMETRY)).is_failure
        assert not publish(client, dev.topic(), json.dumps(TELEMETRY)).is_failure
        client.disconnect()
        client.loop_stop()
        wait_until(lambda: count(database_url, "ts_measure", a) == 1, 30, what="the device's row")
    finally:
        listener.stop()
        worker.stop()
    assert count(database_url, "ts_measure", b) == 0
    assert query(database_url, "SELECT count(*) FROM ingest_errors WHERE tenant_id = %s OR topic LIKE %s",
                 (b, f"traksense/{b}/%")) == [(0,)]


@pytest.mark.parametrize(("user", "message"), [
    pytest.param("admin", "the listener must not log in as the broker admin", id="the admin"),
    pytest.param("acme%2Fd1", "the listener's user name must not contain '/'", id="a device's name"),
])
def test_the_listener_account_is_neither_the_admin_nor_a_device(broker: Broker, user: str, message: str) -> None:
    result = devices(broker, "setup-listener", MQTT_URL=broker.url(user, "pw"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"devices: {message}")
    assert len(result.stderr.splitlines()) == 1
    assert not refused(broker.port, "probe", "admin", parse_mqtt_url(broker.admin_url).password), \
        "the admin's password is unchanged"


def test_the_listener_may_subscribe_as_a_shared_subscription(broker: Broker) -> None:
    tenant = unique("t")
    ok(devices(broker, "add-tenant", tenant))
    dev = add_device(broker, tenant, "d1")
    with ListenerSide(broker.listener_url, shared_group="ingest") as listener:
        _, client = connect(broker.port, dev.username, dev.username, dev.password)
        assert not publish(client, dev.topic(), "shared").is_failure
        client.disconnect()
        client.loop_stop()
        wait_until(lambda: listener.payloads(tenant), 15, what="the message through the shared subscription")
        assert listener.payloads(tenant) == ["shared"]

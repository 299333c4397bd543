"""MQTT over TLS as docker-compose.yml runs it: deploy/mosquitto/tls.conf with a certificate from
scripts/make-tls-cert.sh, on a real Mosquitto of the test's own (its own port, its own files).

A device that trusts the script's CA connects and publishes, with paho and with mosquitto_pub as
docs/security.md shows; one that trusts only the system's CAs fails the certificate check, and so does
one that dials a name the certificate does not hold. Anonymous access here: the broker's accounts
are the dynamic security plugin's (tests/integration/test_mqtt_security.py), the same on 8883.
"""

from __future__ import annotations

import os
import pwd
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.faults.services import accepts_connections, scratch_dir
from tests.support import ROOT, Process, free_port, publisher, unique, wait_until

pytestmark = pytest.mark.integration

TLS_CONF = ROOT / "deploy" / "mosquitto" / "tls.conf"
MAKE_CERT = ROOT / "scripts" / "make-tls-cert.sh"


@dataclass
class TlsBroker:
    port: int
    certs: Path


def run_make_cert(directory: Path, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MAKE_CERT), str(directory), *names], capture_output=True, text=True,
                          timeout=120, check=False)


def shipped_tls_config(port: int, certs: Path) -> str:
    """tls.conf as shipped, with only its port and certificate directory moved to this machine."""
    text = TLS_CONF.read_text(encoding="utf-8")
    moves = {"listener 8883\n": f"listener {port} 127.0.0.1\n", "/mosquitto/certs/": f"{certs}/"}
    for shipped, here in moves.items():
        assert shipped in text, f"tls.conf no longer has {shipped.strip()!r}"
        text = text.replace(shipped, here)
    return "allow_anonymous true\n" + text


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    directory = scratch_dir("tls-mosquitto-")
    certs = directory / "certs"
    made = run_make_cert(certs, "localhost")  # not 127.0.0.1: a device dialling that must fail
    assert made.returncode == 0, made.stderr
    # As the script says to: the broker reads its key as its own user, after dropping root.
    owner = pwd.getpwnam("mosquitto")
    os.chown(certs / "server.key", owner.pw_uid, owner.pw_gid)
    port = free_port()
    conf = directory / "mosquitto.conf"
    conf.write_text(shipped_tls_config(port, certs))
    proc = Process(unique("tls-mosquitto-"), ["mosquitto", "-c", str(conf)], {}, tmp_path_factory.mktemp("tls"))
    try:
        wait_until(lambda: accepts_connections(port) or proc.popen.poll() is not None, 15, what="mosquitto")
        assert proc.popen.poll() is None, proc.log()
        yield TlsBroker(port, certs)
    finally:
        proc.kill_group()
        shutil.rmtree(directory, ignore_errors=True)


def tls_connect(port: int, host: str = "localhost", ca_file: str | None = None) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("tls-"), protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=ca_file)  # None: the system's CAs
    client.connect(host, port, 10)
    return client


def test_a_device_trusting_the_ca_publishes_over_tls(broker: TlsBroker) -> None:
    with publisher("localhost", broker.port, ca_file=str(broker.certs / "ca.crt")) as device:
        info = device.client.publish("traksense/acme/s1/d1/telem", b"{}", qos=1)
        info.wait_for_publish(10)
        assert info.is_published()


def test_mosquitto_pub_with_the_ca_publishes_over_tls(broker: TlsBroker) -> None:
    result = subprocess.run(["mosquitto_pub", "--cafile", str(broker.certs / "ca.crt"), "-h", "localhost",
                             "-p", str(broker.port), "-q", "1", "-t", "traksense/acme/s1/d1/telem", "-m", "{}"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def test_a_device_without_the_ca_fails_verification(broker: TlsBroker) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match=r"self.signed|unable to get local issuer"):
        tls_connect(broker.port)


def test_a_device_dialling_another_name_fails_verification(broker: TlsBroker) -> None:
    # The certificate holds the name localhost only; 127.0.0.1 is the same host, another name.
    with pytest.raises(ssl.SSLCertVerificationError, match=r"mismatch|doesn't match"):
        tls_connect(broker.port, host="127.0.0.1", ca_file=str(broker.certs / "ca.crt"))


def test_plain_mqtt_gets_no_answer_on_the_tls_port(broker: TlsBroker) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("plain-"), protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port, 10)
    assert client.loop(timeout=5) != mqtt.MQTT_ERR_SUCCESS or not client.is_connected()


def test_the_script_writes_names_into_the_certificate_and_keeps_keys_private(tmp_path: Path) -> None:
    made = run_make_cert(tmp_path / "c", "mqtt.example.com", "192.0.2.7")
    assert made.returncode == 0, made.stderr
    text = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "c" / "server.crt"), "-noout", "-ext",
                           "subjectAltName,extendedKeyUsage"], capture_output=True, text=True, check=True).stdout
    assert "DNS:mqtt.example.com" in text and "IP Address:192.0.2.7" in text and "TLS Web Server" in text
    for key in ("ca.key", "server.key"):
        assert (tmp_path / "c" / key).stat().st_mode & 0o077 == 0, key
    assert (tmp_path / "c").stat().st_mode & 0o777 == 0o755


def test_the_script_makes_a_directory_the_broker_can_enter_whatever_the_umask(tmp_path: Path) -> None:
    made = subprocess.run(["sh", "-c", 'umask 077 && exec "$0" "$1"', str(MAKE_CERT), str(tmp_path / "c")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "c").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "c" / "server.crt").stat().st_mode & 0o777 == 0o644
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "c" / "ca.crt"),
                             str(tmp_path / "c" / "server.crt")], capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stderr


def test_the_script_never_overwrites_a_certificate(tmp_path: Path) -> None:
    assert run_make_cert(tmp_path / "c").returncode == 0
    before = (tmp_path / "c" / "server.key").read_bytes()
    again = run_make_cert(tmp_path / "c")
    assert again.returncode == 1 and "exists" in again.stderr
    assert (tmp_path / "c" / "server.key").read_bytes() == before

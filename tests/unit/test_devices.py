"""The provisioning CLI's pure parts: ids, the ACLs a device gets, reading the plugin's lists, and
the admin URL setting (from a file, never echoed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from ingest_tasks.devices import accounts
from ingest_tasks.devices.__main__ import main
from ingest_tasks.devices.accounts import BadName, Device, DeviceName
from ingest_tasks.settings import Settings

level = st.text(st.characters(blacklist_characters="/+#", blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
                min_size=1, max_size=20).filter(str.isprintable)


@pytest.mark.parametrize("value", [
    pytest.param("", id="empty"),
    pytest.param("a/b", id="slash"),
    pytest.param("a+", id="plus"),
    pytest.param("#", id="hash"),
    pytest.param("a\x00b", id="NUL"),
    pytest.param("a\nb", id="newline"),
    pytest.param("x" * 129, id="129 characters"),
])
def test_an_id_that_cannot_be_a_topic_level_is_refused(value: str) -> None:
    with pytest.raises(BadName):
        accounts.check_id("device", value)


def test_an_id_of_128_characters_is_taken() -> None:
    assert accounts.check_id("tenant", "x" * 128) == "x" * 128


@given(tenant=level, device=level, other_tenant=level, other_device=level, site=level)
def test_a_device_may_publish_only_its_own_tenants_and_its_own_devices_topics(
        tenant: str, device: str, other_tenant: str, other_device: str, site: str) -> None:
    name = DeviceName.of(tenant, device)
    acls = accounts.create_device_role(name)["acls"]
    assert {a["acltype"] for a in acls} == {"publishClientSend"}

    def allowed(topic: str) -> bool:
        return any(topic_matches_sub(a["topic"], topic) for a in acls)

    for kind in accounts.KINDS:
        assert allowed(f"traksense/{tenant}/{site}/{device}/{kind}")
        assert allowed(f"traksense/{other_tenant}/{site}/{device}/{kind}") == (other_tenant == tenant)
        assert allowed(f"traksense/{tenant}/{site}/{other_device}/{kind}") == (other_device == device)
    assert not allowed(f"traksense/{tenant}/{site}/{device}/cmd")


def test_a_device_is_bound_to_its_own_client_id_in_its_tenants_group() -> None:
    command = accounts.create_device(DeviceName.of("acme", "d1"), "pw")
    assert command["username"] == command["clientid"] == "acme/d1"
    assert command["groups"] == [{"groupname": "tenant:acme"}]
    assert command["roles"] == [{"rolename": "device:acme/d1"}]


def client(username: str, roles: list[str], groups: list[str], **extra: Any) -> dict[str, Any]:
    return {"username": username, "clientid": username, "roles": [{"rolename": r} for r in roles],
            "groups": [{"groupname": g} for g in groups], **extra}


def test_the_devices_are_the_clients_with_their_own_role_in_their_tenants_group() -> None:
    clients = [
        client("admin", ["admin"], []),
        client("ingest", ["traksense-listener"], []),
        client("b/d2", ["device:b/d2"], ["tenant:b"], disabled=True),
        client("a/d1", ["device:a/d1"], ["tenant:a"]),
        client("a/d3", ["device:a/d1"], ["tenant:a"]),  # someone else's role: not made by the CLI
        client("c/d1", ["device:c/d1"], ["tenant:a"]),  # in another tenant's group
    ]
    assert accounts.devices_from(clients) == [Device("a", "d1", "a/d1", "a/d1", False),
                                              Device("b", "d2", "b/d2", "b/d2", True)]


def test_the_tenants_are_the_tenant_groups() -> None:
    groups = [{"groupname": "tenant:b"}, {"groupname": "ops"}, {"groupname": "tenant:a"}]
    assert accounts.tenants_from(groups) == ["a", "b"]


def test_the_admin_url_is_read_from_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "admin").write_text("mqtt://admin:s3cr%2Fet@broker:1883\n")
    monkeypatch.setenv("MQTT_ADMIN_URL_FILE", str(tmp_path / "admin"))
    assert Settings().mqtt_admin_url == "mqtt://admin:s3cr%2Fet@broker:1883"


@pytest.mark.parametrize("url", [
    pytest.param("mqtt://broker:1883", id="no user"),
    pytest.param("mqtt://admin:s3cr/et@broker:1883", id="unencoded slash"),
])
def test_a_bad_admin_url_is_one_line_without_its_secret(
        url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MQTT_ADMIN_URL", url)
    with pytest.raises(SystemExit) as exc:
        main(["list"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("invalid setting MQTT_ADMIN_URL: ")
    assert len(err.splitlines()) == 1
    assert "s3cr" not in err


def test_without_an_admin_url_the_cli_says_which_variable(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("MQTT_ADMIN_URL", raising=False)
    monkeypatch.delenv("MQTT_ADMIN_URL_FILE", raising=False)
    assert main(["list"]) == 2
    assert capsys.readouterr().err.startswith("devices: MQTT_ADMIN_URL (or MQTT_ADMIN_URL_FILE) is not set")


def test_a_bad_id_is_refused_before_any_connection(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["add-device", "acme", "a/b"]) == 2
    assert capsys.readouterr().err.startswith("devices: device id 'a/b' has a character")

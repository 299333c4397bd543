"""The device provisioning command line: `python -m ingest_tasks.devices COMMAND ...`.

    add-tenant T              a tenant (a group in the broker)
    add-device T D            a device of tenant T; prints its credentials once
    list [--tenant T] [--json]  devices (one JSON object per line with --json)
    tenants [--json]          tenants
    rotate T D                a new password for the device, printed once; its sessions are closed
    disable T D / enable T D  refuse / allow its login (disabling closes its sessions)
    remove T D                delete the device and its role
    setup-listener            create (or update) the listener's account from MQTT_URL and MQTT_CLIENT_ID

Everything goes live through the broker's dynamic security plugin as the admin of MQTT_ADMIN_URL
(or MQTT_ADMIN_URL_FILE); neither the broker nor the listener restarts. Owns the arguments and
what is printed; refuses to print the admin's secret. Exit codes: 0 done, 1 refused (unknown
tenant or device, already exists, the broker refused), 2 a usage or settings error.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Callable

from ingest_tasks.devices import accounts
from ingest_tasks.devices.accounts import BadName, DeviceName
from ingest_tasks.devices.control import CommandFailed, Control, ControlError
from ingest_tasks.settings import Settings, load_settings, parse_mqtt_url

PASSWORD_BYTES = 24  # 32 URL-safe characters from `secrets`
Handler = Callable[[Control, argparse.Namespace, Settings], int]


class Refused(Exception):
    """The operation cannot be done as asked (exit 1)."""


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def device_of(args: argparse.Namespace) -> DeviceName:
    return DeviceName.of(args.tenant, args.device)


def exists(control: Control, command: dict[str, object], not_found: str) -> bool:
    try:
        control.run(command)
    except CommandFailed as exc:
        if exc.error == not_found:
            return False
        raise
    return True


def add_tenant(control: Control, args: argparse.Namespace, _settings: Settings) -> int:
    tenant = accounts.check_id("tenant", args.tenant)
    if exists(control, accounts.get_group(tenant), "Group not found"):
        raise Refused(f"tenant {tenant} exists")
    control.run(accounts.create_tenant(tenant))
    print(f"tenant {tenant} added")
    return 0


def add_device(control: Control, args: argparse.Namespace, _settings: Settings) -> int:
    name = device_of(args)
    if not exists(control, accounts.get_group(name.tenant), "Group not found"):
        raise Refused(f"unknown tenant {name.tenant} (add it first: add-tenant {name.tenant})")
    if exists(control, accounts.get_client(name.username), "Client not found"):
        raise Refused(f"device {name} exists (rotate its password with: rotate {name.tenant} {name.device})")
    if exists(control, {"command": "getRole", "rolename": name.role}, "Role not found"):
        control.run(accounts.delete_role(name.role))  # left by an add-device cut short: its ACLs are made again
    control.run(accounts.create_device_role(name))
    password = new_password()
    control.run(accounts.create_device(name, password))
    print_credentials(name, password, args.json, "added")
    return 0


def print_credentials(name: DeviceName, password: str, as_json: bool, what: str) -> None:
    if as_json:
        print(json.dumps({"tenant": name.tenant, "device": name.device, "username": name.username,
                          "client_id": name.username, "password": password}))
        return
    print(f"device {name} {what}; its password is shown only this once:")
    print(f"  username:  {name.username}")
    print(f"  client id: {name.username}")
    print(f"  password:  {password}")
    print(f"  publishes: {', '.join(name.topics())}")


def rotate(control: Control, args: argparse.Namespace, _settings: Settings) -> int:
    name = device_of(args)
    require_device(control, name)
    password = new_password()
    control.run(accounts.on_client("setClientPassword", name.username, password=password))
    print_credentials(name, password, args.json, "has a new password (its open sessions were closed)")
    return 0


def require_device(control: Control, name: DeviceName) -> None:
    if not exists(control, accounts.get_client(name.username), "Client not found"):
        raise Refused(f"unknown device {name}")


def switch(command: str, done: str) -> Handler:
    def handler(control: Control, args: argparse.Namespace, _settings: Settings) -> int:
        name = device_of(args)
        require_device(control, name)
        control.run(accounts.on_client(command, name.username))
        print(f"device {name} {done}")
        return 0
    return handler


def remove(control: Control, args: argparse.Namespace, _settings: Settings) -> int:
    name = device_of(args)
    require_device(control, name)
    control.run(accounts.on_client("deleteClient", name.username))
    if exists(control, {"command": "getRole", "rolename": name.role}, "Role not found"):
        control.run(accounts.delete_role(name.role))
    print(f"device {name} removed")
    return 0


def list_devices(control: Control, args: argparse.Namespace, _settings: Settings) -> int:
    clients = control.run(accounts.list_all("listClients")).get("clients", [])
    devices = [d for d in accounts.devices_from(clients) if args.tenant in (None, d.tenant)]
    for d in devices:
        state = "disabled" if d.disabled else "enabled"
        if args.json:
            print(json.dumps({"tenant": d.tenant, "device": d.device, "username": d.username,
                              "client_id": d.client_id, "enabled": not d.disabled}))
        else:
            print(f"{d.tenant:<24}  {d.device:<24}  {state}")
    if not args.json:
        print(f"{len(devices)} device(s)", file=sys.stderr)
    return 0


def list_tenants(control: Control, args: argparse.Namespace, _settings: Settings) -> int:
    groups = control.run(accounts.list_all("listGroups")).get("groups", [])
    for tenant in accounts.tenants_from(groups):
        print(json.dumps({"tenant": tenant}) if args.json else tenant)
    return 0


def setup_listener(control: Control, _args: argparse.Namespace, settings: Settings) -> int:
    address = parse_mqtt_url(settings.mqtt_url)
    if not address.username or not address.password:
        raise Refused("MQTT_URL (or MQTT_URL_FILE) has no user name and password for the listener")
    if "/" in address.username:
        raise Refused("the listener's user name must not contain '/': those names are the devices' (tenant/device)")
    if address.username == parse_mqtt_url(settings.mqtt_admin_url).username:
        raise Refused("the listener must not log in as the broker admin: give MQTT_URL its own user name")
    role_found = exists(control, {"command": "getRole", "rolename": accounts.LISTENER_ROLE}, "Role not found")
    control.run(accounts.listener_role(role_found))
    found = exists(control, accounts.get_client(address.username), "Client not found")
    control.run(accounts.listener_client(address.username, address.password, settings.mqtt_client_id, found))
    print(f"listener account {address.username} {'updated' if found else 'added'}, "
          f"bound to client id {settings.mqtt_client_id}")
    return 0


COMMANDS: dict[str, Handler] = {
    "add-tenant": add_tenant, "add-device": add_device, "list": list_devices, "tenants": list_tenants,
    "rotate": rotate, "disable": switch("disableClient", "disabled (its open sessions were closed)"),
    "enable": switch("enableClient", "enabled"), "remove": remove, "setup-listener": setup_listener,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ingest_tasks.devices", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("add-tenant", help="add a tenant").add_argument("tenant")
    for name, text in (("add-device", "add a device and print its credentials once"),
                       ("rotate", "give a device a new password, printed once"),
                       ("disable", "refuse a device's login"), ("enable", "allow a device's login again"),
                       ("remove", "delete a device")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("tenant")
        cmd.add_argument("device")
        if name in ("add-device", "rotate"):
            cmd.add_argument("--json", action="store_true", help="the credentials as one JSON object")
    listing = sub.add_parser("list", help="list devices")
    listing.add_argument("--tenant")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    sub.add_parser("tenants", help="list tenants").add_argument("--json", action="store_true")
    sub.add_parser("setup-listener", help="create or update the listener's account from MQTT_URL")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:  # a bad id is told before any connection is made
        if getattr(args, "tenant", None) is not None:
            accounts.check_id("tenant", args.tenant)
        if getattr(args, "device", None) is not None:
            accounts.check_id("device", args.device)
    except BadName as exc:
        print(f"devices: {exc}", file=sys.stderr)
        return 2
    settings = load_settings()
    if not settings.mqtt_admin_url:
        print("devices: MQTT_ADMIN_URL (or MQTT_ADMIN_URL_FILE) is not set: the broker admin's "
              "mqtt://user:password@host:port", file=sys.stderr)
        return 2
    try:
        with Control(parse_mqtt_url(settings.mqtt_admin_url), settings.mqtt_ca_file) as control:
            return COMMANDS[args.command](control, args, settings)
    except (Refused, ControlError) as exc:
        print(f"devices: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""How tenants, devices and the listener map onto the dynamic security plugin's clients, groups
and roles, and the plugin's JSON commands for each change. Pure: no MQTT, no settings.

A tenant is a group `tenant:<tenant>`. A device is a client whose user name and client id are both
`<tenant>/<device>` (bound: the broker refuses the login under any other client id, so a device's
password cannot be used to take another client's session), in its tenant's group, with a role of
its own, `device:<tenant>/<device>`, allowing it to publish to exactly
`traksense/<tenant>/+/<device>/{telem,ack,event}` and nothing else. Mosquitto 2.0's plugin has no
`%u`/`%c` substitution in ACL topics, and the site level sits between tenant and device, so one
role per device is how "only as its own device" is said. Subscribing is denied by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ingest_tasks.limits import MAX_TOPIC_LEVEL_CHARS

TOPIC_ROOT = "traksense"
KINDS = ("telem", "ack", "event")
TENANT_GROUP_PREFIX = "tenant:"
DEVICE_ROLE_PREFIX = "device:"
LISTENER_ROLE = "traksense-listener"
FORBIDDEN_CHARS = frozenset("/+#")

Command = dict[str, Any]


class BadName(ValueError):
    """A tenant or device id that cannot be a topic level of CONTRACT.md's topics."""


def check_id(kind: str, value: str) -> str:
    """`value` if it can be a topic level (non-empty, no / + #, printable, at most 128 characters)."""
    if not value:
        raise BadName(f"{kind} id is empty")
    if len(value) > MAX_TOPIC_LEVEL_CHARS:
        raise BadName(f"{kind} id has {len(value)} characters, over the limit of {MAX_TOPIC_LEVEL_CHARS}")
    if FORBIDDEN_CHARS & set(value) or not value.isprintable():
        raise BadName(f"{kind} id {value!r} has a character a topic level cannot hold (/ + # or a control)")
    return value


@dataclass(frozen=True)
class DeviceName:
    tenant: str
    device: str

    @classmethod
    def of(cls, tenant: str, device: str) -> DeviceName:
        return cls(check_id("tenant", tenant), check_id("device", device))

    @property
    def username(self) -> str:
        return f"{self.tenant}/{self.device}"

    @property
    def role(self) -> str:
        return DEVICE_ROLE_PREFIX + self.username

    def topics(self) -> list[str]:
        return [f"{TOPIC_ROOT}/{self.tenant}/+/{self.device}/{kind}" for kind in KINDS]

    def __str__(self) -> str:
        return self.username


def tenant_group(tenant: str) -> str:
    return TENANT_GROUP_PREFIX + tenant


def allow(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "allow": True}


def create_tenant(tenant: str) -> Command:
    return {"command": "createGroup", "groupname": tenant_group(tenant), "textname": f"tenant {tenant}"}


def get_group(tenant: str) -> Command:
    return {"command": "getGroup", "groupname": tenant_group(tenant)}


def get_client(username: str) -> Command:
    return {"command": "getClient", "username": username}


def create_device_role(name: DeviceName) -> Command:
    acls = [allow("publishClientSend", topic) for topic in name.topics()]
    return {"command": "createRole", "rolename": name.role, "textname": f"device {name}", "acls": acls}


def create_device(name: DeviceName, password: str) -> Command:
    return {"command": "createClient", "username": name.username, "password": password,
            "clientid": name.username, "textname": f"device {name}",
            "groups": [{"groupname": tenant_group(name.tenant)}], "roles": [{"rolename": name.role}]}


def on_client(command: str, username: str, **extra: Any) -> Command:
    """deleteClient, enableClient, disableClient, setClientPassword (extra: password)."""
    return {"command": command, "username": username, **extra}


def delete_role(role: str) -> Command:
    return {"command": "deleteRole", "rolename": role}


def listener_role(exists: bool) -> Command:
    """The listener may subscribe to every tenant's topics, also as a shared subscription
    (MQTT_SHARED_GROUP: Mosquitto 2.0 checks the filter with its `$share/<group>/` prefix), and
    receive them. An existing role gets these ACLs again."""
    everything, shared = f"{TOPIC_ROOT}/#", f"$share/+/{TOPIC_ROOT}/#"
    acls = [allow(kind, f) for kind in ("subscribePattern", "unsubscribePattern") for f in (everything, shared)]
    acls.append(allow("publishClientReceive", everything))
    return {"command": "modifyRole" if exists else "createRole", "rolename": LISTENER_ROLE,
            "textname": "the ingest listener", "acls": acls}


def listener_client(username: str, password: str, client_id: str, exists: bool) -> Command:
    """Create the listener's account, or set it again (password, bound client id, role)."""
    return {"command": "modifyClient" if exists else "createClient", "username": username,
            "password": password, "clientid": client_id, "textname": "the ingest listener",
            "roles": [{"rolename": LISTENER_ROLE}]}


def list_all(kind: str) -> Command:
    """listClients or listGroups, every entry with its details."""
    return {"command": kind, "verbose": True, "count": -1, "offset": 0}


@dataclass(frozen=True)
class Device:
    tenant: str
    device: str
    username: str
    client_id: str
    disabled: bool


def devices_from(clients: list[dict[str, Any]]) -> list[Device]:
    """The devices among a verbose listClients answer: clients in a tenant group with a device role."""
    found = []
    for client in clients:
        username = str(client.get("username", ""))
        tenant, _, device = username.partition("/")
        roles = {r.get("rolename") for r in client.get("roles", [])}
        groups = {g.get("groupname") for g in client.get("groups", [])}
        if device and DEVICE_ROLE_PREFIX + username in roles and tenant_group(tenant) in groups:
            found.append(Device(tenant, device, username, str(client.get("clientid", "")),
                                bool(client.get("disabled", False))))
    return sorted(found, key=lambda d: (d.tenant, d.device))


def tenants_from(groups: list[dict[str, Any]]) -> list[str]:
    names = (str(g.get("groupname", "")) for g in groups)
    return sorted(n.removeprefix(TENANT_GROUP_PREFIX) for n in names if n.startswith(TENANT_GROUP_PREFIX))

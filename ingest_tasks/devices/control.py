"""The broker's dynamic security control API ($CONTROL/dynamic-security/v1) over one MQTT session.

Owns logging in as the broker admin, sending one command at a time and waiting for its answer
(matched by correlation data), and turning each way that can fail into one `ControlError` whose
message is a single line holding no secret. Refuses to decide what a command means: `accounts`
builds the commands, the command line reads the answers.
"""

from __future__ import annotations

import json
import queue
import ssl
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ingest_tasks.settings import MqttAddress

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
LOGIN_REFUSED_CODES = (134, 135)  # bad user name or password, not authorized
DEFAULT_TIMEOUT_S = 10.0


class ControlError(Exception):
    """Something the operator must see, in one line without any secret."""


class LoginRefused(ControlError):
    pass


class CommandFailed(ControlError):
    """The plugin answered a command with an error, e.g. "Client not found"."""

    def __init__(self, command: str, error: str) -> None:
        super().__init__(f"the broker refused {command}: {error}")
        self.command = command
        self.error = error


Answer = dict[str, Any]


class Control:
    """A logged-in admin session; use as a context manager."""

    def __init__(self, address: MqttAddress, ca_file: str = "", timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"traksense-devices-{uuid.uuid4().hex[:12]}",
                                   protocol=mqtt.MQTTv5)
        self._client.username_pw_set(address.username, address.password)
        if address.tls:
            self._client.tls_set(ca_certs=ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
        self._client.on_connect = lambda _c, _u, _f, reason, _p: self._events.put(("connect", reason))
        self._client.on_subscribe = lambda _c, _u, _m, reasons, _p: self._events.put(("subscribe", reasons))
        self._client.on_message = lambda _c, _u, msg: self._events.put(("message", msg.payload))
        self._client.on_disconnect = lambda _c, _u, _f, reason, _p: self._events.put(("disconnect", reason))

    def __enter__(self) -> Control:
        self._connect()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _connect(self) -> None:
        a = self.address
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        try:
            self._client.connect(a.host, a.port, 30, clean_start=True, properties=props)
        except (OSError, ssl.SSLError) as exc:
            raise ControlError(f"cannot reach the broker at {a.host}:{a.port}: {exc.strerror or exc}") from None
        self._client.loop_start()
        reason = self._wait("connect", "the broker's answer to the admin login")
        if isinstance(reason, ReasonCode) and reason.is_failure:
            if reason.value in LOGIN_REFUSED_CODES:
                raise LoginRefused("the broker refused the admin login (check MQTT_ADMIN_URL's user and password)")
            raise ControlError(f"the broker refused the admin connection: {reason}")
        self._client.subscribe(RESPONSE_TOPIC, qos=1)
        reasons = self._wait("subscribe", "the broker's answer to subscribing to the control API")
        if any(r.is_failure for r in reasons):
            raise ControlError("the admin account may not use the dynamic security control API")

    def _wait(self, kind: str, what: str) -> Any:
        """The next event of `kind`; a disconnect or the timeout first is a ControlError."""
        try:
            while True:
                event, value = self._events.get(timeout=self.timeout_s)
                if event == kind:
                    return value
                if event == "disconnect" and kind != "connect":
                    raise ControlError(f"the broker closed the admin connection ({value}) waiting for {what}")
        except queue.Empty:
            raise ControlError(f"no answer within {self.timeout_s:.0f} s waiting for {what} "
                               "(is the dynamic security plugin loaded?)") from None

    def run(self, command: dict[str, Any]) -> Answer:
        """Send one command and return its answer's `data` ({} if none); an error is CommandFailed."""
        correlation = uuid.uuid4().hex
        body = json.dumps({"commands": [{**command, "correlationData": correlation}]})
        info = self._client.publish(CONTROL_TOPIC, body, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ControlError(f"cannot send {command['command']} to the broker ({mqtt.error_string(info.rc)})")
        while True:
            payload = self._wait("message", f"the answer to {command['command']}")
            for answer in json.loads(payload).get("responses", []):
                if answer.get("correlationData") != correlation:
                    continue  # another admin's answer: every admin session receives them all
                if answer.get("error"):
                    raise CommandFailed(command["command"], str(answer["error"]))
                data = answer.get("data", {})
                return data if isinstance(data, dict) else {}

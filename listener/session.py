"""The listener's MQTT session: whether the broker should still have it, and the alarm when it does not.

Owns three things, in the order a connect meets them:
- the memory across processes (`SessionMemory`; the listener keeps it in Redis, one key per broker
  and client id) of whether this client id ever had a session on this broker, recalled at start;
- the expectation over one process's connects (`SessionWatch`, pure: a CONNACK's session-present
  flag in, a `Verdict` out);
- the alarm (`SessionAlarm`): a session lost where one was expected, or a DISCONNECT the broker
  sends, is an error log that says what it means and a metric, with names from a closed set.
Refuses to talk MQTT: the subscriber tells it what each CONNACK and DISCONNECT said.

Why it matters: the broker keeps the QoS 1 messages published for the listener while it is away
only inside its session. A CONNACK with session present = 0 where a session was expected means
the broker discarded that session (expired, evicted, taken over, or lost in a broker restart
without persistence), and every message queued in it is gone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import redis
from redis.exceptions import RedisError

from listener import metrics

log = logging.getLogger(__name__)

SESSION_KEY_PREFIX = "ingest:mqtt-session:"  # + host:port:client id


class Verdict(Enum):
    RESUMED = "resumed"  # the broker kept the session
    NEW = "new"  # no session was expected: the first start of this client id, or none is kept
    LOST = "lost"  # a session was expected and the broker had none
    UNKNOWN = "unknown"  # no session, and whether one was expected could not be told


@dataclass
class SessionWatch:
    """Session presence over one process's connects.

    `keeps_session`: whether the broker is asked to keep the session after a disconnect (MQTT 5
    with a Session Expiry Interval above 0, or MQTT 3.1.1 with clean_session=0).
    `expected`: whether the next connect should find a session; at the start, whether this
    client id had one on this broker before the process started (None: could not be told).
    After any successful connect a session is expected, when one is kept.
    """

    keeps_session: bool
    expected: bool | None

    def connected(self, session_present: bool) -> Verdict:
        expected, self.expected = self.expected, self.keeps_session
        if session_present:
            return Verdict.RESUMED
        if not self.keeps_session or expected is False:
            return Verdict.NEW
        return Verdict.LOST if expected else Verdict.UNKNOWN


# MQTT 5 reason codes a server may send in DISCONNECT (MQTT 5.0, 3.14.2.1), as metric labels.
DISCONNECT_REASONS: dict[int, str] = {
    0x00: "normal_disconnection",
    0x80: "unspecified_error",
    0x81: "malformed_packet",
    0x82: "protocol_error",
    0x83: "implementation_specific_error",
    0x87: "not_authorized",
    0x89: "server_busy",
    0x8B: "server_shutting_down",
    0x8D: "keep_alive_timeout",
    0x8E: "session_taken_over",
    0x93: "receive_maximum_exceeded",
    0x95: "packet_too_large",
    0x97: "quota_exceeded",
    0x98: "administrative_action",
    0x9C: "use_another_server",
    0x9D: "server_moved",
    0x9F: "connection_rate_exceeded",
}
OTHER_REASON = "other"

# What an operator should look at, by reason; the rest get the general advice.
DISCONNECT_HINTS: dict[str, str] = {
    "session_taken_over": "another client connected with the same MQTT_CLIENT_ID; give every listener its own "
                          "id (several listeners split the load with MQTT_SHARED_GROUP)",
    "quota_exceeded": "the broker's per-session queue or rate limit was reached; raise its queue limit "
                      "(Mosquitto max_queued_messages, EMQX mqtt.max_mqueue_len, ejabberd mod_mqtt max_queue)",
    "receive_maximum_exceeded": "the broker says the listener sent too many unacknowledged QoS 2 messages",
    "packet_too_large": "a packet exceeded a size limit; check the broker's max_packet_size against "
                        "MQTT_MAX_PACKET_BYTES",
    "not_authorized": "the broker no longer accepts the listener's login or its access rules changed",
    "administrative_action": "an operator or the broker's admin API closed the connection (e.g. a password change)",
}
GENERAL_HINT = "see the broker's log for why"


def disconnect_reason_name(code: int) -> str:
    """The metric label of a server DISCONNECT's reason code: a name from a closed set, else "other"."""
    return DISCONNECT_REASONS.get(code, OTHER_REASON)


def disconnect_hint(name: str) -> str:
    return DISCONNECT_HINTS.get(name, GENERAL_HINT)


SESSION_LOST_HINT = (
    "the broker discarded the listener's session: messages queued for it while it was away or "
    "unacknowledged may have been lost. Check the broker keeps sessions long enough (MQTT_SESSION_EXPIRY "
    "with MQTT 5, and the broker's own expiry settings), keeps them across its restarts (Mosquitto: "
    "persistence true) and "
    "queues enough for them (Mosquitto max_queued_messages, EMQX mqtt.max_mqueue_len, ejabberd mod_mqtt "
    "max_queue), and that no other client uses MQTT_CLIENT_ID"
)


class SessionMemory(Protocol):
    """Whether this client id had a session on this broker before this process (kept outside it)."""

    def recall(self) -> bool | None:
        """True or False; None when it cannot be told (the store is unreachable)."""

    def remember(self) -> bool:
        """Record that the client id has a session; False when it could not be recorded."""


class NoSessionMemory:
    """No memory across processes: the first connect of a process never expects a session."""

    def recall(self) -> bool | None:
        return False

    def remember(self) -> bool:
        return True


def session_key(host: str, port: int, client_id: str) -> str:
    return f"{SESSION_KEY_PREFIX}{host}:{port}:{client_id}"


class RedisSessionMemory:
    """Whether a listener with this client id ever connected to this broker, kept in Redis (one key, no expiry).

    Lets the first connect of a process tell a first start (no session yet: fine) from a session
    the broker discarded while the listener was away (an alarm).
    """

    def __init__(self, client: redis.Redis, host: str, port: int, client_id: str) -> None:
        self._client = client
        self.key = session_key(host, port, client_id)

    def recall(self) -> bool | None:
        try:
            return bool(self._client.exists(self.key))
        except (RedisError, OSError) as exc:
            log.warning("cannot tell from Redis whether the MQTT session existed before: %s", exc)
            return None

    def remember(self) -> bool:
        try:
            self._client.set(self.key, int(time.time()))
            return True
        except (RedisError, OSError) as exc:
            log.warning("cannot record the MQTT session in Redis (tried again at the next connect): %s", exc)
            return False


class SessionAlarm:
    """What the subscriber tells about its session, turned into expectations, logs and metrics."""

    def __init__(self, client_id: str, keeps_session: bool, memory: SessionMemory | None = None) -> None:
        self.client_id = client_id
        self._memory = memory or NoSessionMemory()
        self._remembered = False
        self.watch = SessionWatch(keeps_session, expected=False)

    def starting(self) -> None:
        """Before the first connect: recall whether a session should already be there."""
        self.watch.expected = self._memory.recall() if self.watch.keeps_session else False

    def connected(self, session_present: bool) -> Verdict:
        verdict = self.watch.connected(session_present)
        if verdict is Verdict.LOST:
            metrics.MQTT_SESSION_LOST.inc()
            log.error("mqtt session lost: the broker had no session for client id %s where one was expected; %s",
                      self.client_id, SESSION_LOST_HINT)
        elif verdict is Verdict.UNKNOWN:
            log.warning("mqtt no session for client id %s, and whether one existed before this start cannot be "
                        "told; if it did, messages queued for it were lost", self.client_id)
        return verdict

    def subscribed(self) -> None:
        """The session now holds our subscriptions: record that it exists (once per process)."""
        if not self._remembered and self.watch.keeps_session:
            self._remembered = self._memory.remember()

    def server_disconnected(self, code: int, reason: str, said: str) -> None:
        """The broker closed the connection with a DISCONNECT packet (MQTT 5 only) and said why."""
        name = disconnect_reason_name(code)
        metrics.MQTT_DISCONNECTS.labels(name).inc()
        log.error("mqtt the broker disconnected the listener: %s (0x%02X%s); %s. Messages queued for it are lost "
                  "if the broker discards its session too (the next connect tells)",
                  reason, code, f", {said!r}" if said else "", disconnect_hint(name))

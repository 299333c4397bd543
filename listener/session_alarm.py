"""Whether the broker kept the listener's MQTT session, and what to say when it did not.

Pure: the subscriber tells `SessionWatch` what each CONNACK said and gets back a verdict; the
names of server DISCONNECT reason codes come from a closed set (they are a metric label). Refuses
to do I/O: whether a session existed before this process started is recalled by the caller (the
listener keeps that in Redis) and passed in.

Why it matters: the broker keeps the QoS 1 messages published for the listener while it is away
only inside its session. A CONNACK with session present = 0 where a session was expected means
the broker discarded that session (expired, evicted, taken over, or lost in a broker restart
without persistence), and every message queued in it is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


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

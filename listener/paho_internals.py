"""Every use the listener makes of paho-mqtt's private names, each with why; no other module makes one.

paho's public API has no way to read the socket ourselves and still let paho handle CONNACK,
SUBACK, PINGRESP and DISCONNECT, nor to write many PUBACKs in one go. These four hooks do that,
and were checked against the paho-mqtt versions in `CHECKED_VERSIONS` (requirements.lock pins
one): on any other version the import fails at once, with one line saying what to do, rather
than the listener misbehaving at its first packet.

1. `_packet_read`: paho's loop calls it whenever select() finds the socket readable. `HookedClient`
   sends that call to `read_available` instead, so the subclass reads the socket its own way.
2. `_in_packet`, `_packet_handle`: paho's handling of one packet it has read itself. `handle_packet`
   loads a packet our framing cut into `_in_packet` and runs paho's handler, so connecting,
   subscribing, keep-alive and the broker's DISCONNECT stay paho's.
3. `_msgtime_mutex`, `_last_bytes_received` (and `time_func`, its clock): what paho's keep-alive
   looks at to decide the broker is gone. `note_bytes_received` does what paho's own reading does
   after each read.
4. `_packet_queue`: paho's queue of bytes to send, written by paho's network thread (so ours do
   not interleave with its own writes) and woken once. `send_raw` queues many PUBACKs as one.
   (paho's public `ack` queues and wakes once per message: many times the CPU.)
"""

from __future__ import annotations

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.exception import MalformedPacket

from listener.mqtt_codec import MalformedMqtt

CHECKED_VERSIONS = frozenset({"2.2.0"})

if paho.mqtt.__version__ not in CHECKED_VERSIONS:
    raise ImportError(
        f"listener.paho_internals was checked against paho-mqtt {', '.join(sorted(CHECKED_VERSIONS))}, but "
        f"{paho.mqtt.__version__} is installed: install the version in requirements.lock, or check each private "
        "use listed in listener/paho_internals.py against this one and add it to CHECKED_VERSIONS"
    )

class HookedClient(mqtt.Client):
    """paho's Client, reading with `read_available` (the subclass's) instead of its own `_packet_read`."""

    def read_available(self) -> MQTTErrorCode:
        """Read what the socket holds and handle it; paho's loop calls this when it is readable."""
        raise NotImplementedError

    def _packet_read(self) -> MQTTErrorCode:  # use 1
        return self.read_available()

    def handle_packet(self, command: int, body: bytes) -> MQTTErrorCode:  # use 2
        """paho's own handling of one whole packet: its first byte and what follows the length.

        Raises MalformedMqtt where paho finds the packet malformed.
        """
        self._in_packet = {"command": command, "have_remaining": 1, "remaining_count": [], "remaining_mult": 1,
                           "remaining_length": len(body), "packet": bytearray(body), "to_process": 0, "pos": 0}
        try:
            return self._packet_handle()
        except MalformedPacket as exc:
            raise MalformedMqtt(str(exc)) from exc
        finally:
            self._in_packet = {"command": 0, "have_remaining": 0, "remaining_count": [], "remaining_mult": 1,
                               "remaining_length": 0, "packet": bytearray(b""), "to_process": 0, "pos": 0}

    def note_bytes_received(self) -> None:  # use 3
        """Tell paho's keep-alive the broker is there."""
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()

    def send_raw(self, command: int, data: bytes) -> None:  # use 4
        """Send `data` (whole packets, the first of type `command`) from paho's network thread."""
        self._packet_queue(command, data, 0, 0)

"""The shipped Mosquitto configurations and the listener agree on the largest packet.

The listener announces MQTT_MAX_PACKET_BYTES as its Maximum Packet Size; a broker allowing larger
packets would silently drop, for the listener, every message between the two sizes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest_tasks.settings import Settings

MOSQUITTO_DIR = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"


def options(conf: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in conf.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.strip().partition(" ")
            found.setdefault(name, []).append(value.strip())
    return found


@pytest.mark.parametrize("conf", ["mosquitto.conf", "local.conf"])
def test_the_shipped_broker_takes_packets_as_large_as_the_listener_announces_and_no_larger(conf: str) -> None:
    default = Settings.model_fields["mqtt_max_packet_bytes"].default
    assert options(MOSQUITTO_DIR / conf)["max_packet_size"] == [str(default)]
    assert default >= Settings.model_fields["max_payload_bytes"].default  # the settings' own check holds

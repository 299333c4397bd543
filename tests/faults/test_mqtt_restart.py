"""Scenario 5: restart the MQTT broker (persistence on) mid-load: the listener reconnects and resumes."""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Rig
from tests.faults.load import assert_exact_state, wait_for_everything

pytestmark = [pytest.mark.integration, pytest.mark.faults]

# QoS 1 is "at least once": a PUBACK lost in the instant of the crash makes the broker send that
# message again, and an invalid message then has two dead letters (valid ones are deduplicated
# by their key). At most a chunk's worth of invalid messages (1% of 800) can be affected.
MQTT_COPIES_ALLOWED = 20

BROKER_DOWN_S = 2


def test_a_broker_restart_mid_load_loses_nothing_acknowledged_to_a_device(rig: Rig) -> None:
    rig.start_worker()
    listener = rig.start_listener()
    load = rig.load(messages=20_000, rate=3_000).start()
    expected = load.plan.expected()  # devices publish again whatever was not PUBACKed: all of it lands

    load.wait_published(0.3)
    rig.mosquitto.stop()  # SIGTERM: it saves sessions and queued messages to its persistence file
    time.sleep(BROKER_DOWN_S)
    rig.mosquitto.start()
    load.finish()

    wait_for_everything(rig.database_url, expected, timeout=90, drained=rig.queue_drained)
    assert "mqtt connected (session present=True)" in listener.log()  # its session survived the restart
    assert_exact_state(rig.database_url, expected, dead_copies_allowed=MQTT_COPIES_ALLOWED)

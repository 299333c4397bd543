"""Scenario 2: SIGKILL the listener mid-stream; restarted with the same client id, it gets the rest."""

from __future__ import annotations

import pytest

from tests.faults.conftest import Rig
from tests.faults.load import assert_exact_state, wait_for_everything

pytestmark = [pytest.mark.integration, pytest.mark.faults]

# QoS 1 is "at least once": a PUBACK lost in the instant of the crash makes the broker send that
# message again, and an invalid message then has two dead letters (valid ones are deduplicated
# by their key). At most a chunk's worth of invalid messages (1% of 800) can be affected.
MQTT_COPIES_ALLOWED = 20


def test_a_listener_killed_mid_stream_loses_nothing_once_restarted_with_the_same_client_id(rig: Rig) -> None:
    rig.start_worker()
    listener = rig.start_listener()
    load = rig.load(messages=20_000, rate=3_000).start()
    expected = load.plan.expected()

    load.wait_published(0.4)
    listener.kill_group()  # buffered and unacknowledged messages die with it; the broker keeps them
    load.wait_published(0.6)  # the broker queues what arrives meanwhile for the persistent session
    restarted = rig.start_listener(name="listener-2")
    load.finish()

    wait_for_everything(rig.database_url, expected, timeout=90, drained=rig.queue_drained)
    assert "session present=True" in restarted.log()
    assert_exact_state(rig.database_url, expected, dead_copies_allowed=MQTT_COPIES_ALLOWED)

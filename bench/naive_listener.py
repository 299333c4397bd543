"""`python -m bench.naive_listener`: the naive design's listener, one Celery task per MQTT message.

paho acknowledges each message after the callback returns, that is after its task is in Redis.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from bench.naive import QUEUE, TASK_NAME, app
from bench.workload import TOPIC_FILTER

log = logging.getLogger("bench.naive_listener")


def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
    app.send_task(TASK_NAME, args=(msg.topic, msg.payload), queue=QUEUE)


def on_connect(client: mqtt.Client, *_args: Any) -> None:
    client.subscribe([(TOPIC_FILTER, SubscribeOptions(qos=1))])


def on_subscribe(*_args: Any) -> None:
    log.info("mqtt subscribed")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=os.environ["MQTT_CLIENT_ID"], protocol=mqtt.MQTTv5
    )
    client.on_message, client.on_connect, client.on_subscribe = on_message, on_connect, on_subscribe
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = int(os.environ.get("MQTT_SESSION_EXPIRY", "60"))
    client.connect("127.0.0.1", int(os.environ["BENCH_MQTT_PORT"]), 60, clean_start=False, properties=props)

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        client.disconnect()

    signal.signal(signal.SIGTERM, on_signal)
    client.loop_forever()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

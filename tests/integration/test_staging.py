"""Staging (`listener.staging`): messages made safe in Redis and acknowledged before their chunk goes out.

The Redis side against the real Redis: a chunk takes its staged messages off the list in the same
step that records it, and recording it again takes nothing more. Then the listener on ejabberd's
mod_mqtt, which sends a session one unacknowledged QoS 1 message at a time: a listener SIGKILLed
while it stages loses nothing (the steady load on ejabberd is in test_steady_load.py).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis

from ingest_tasks.ledger import BODY, SENT
from listener.ledger import TAKEN_SUFFIX, SentChunks, StagedMessages
from tests.brokers import BrokerListener, broker_listener, matrix_param
from tests.steady_publisher import SteadyLoad, SteadyReport, publish_steadily
from tests.support import (
    REDIS_HOST,
    count,
    query,
    service_env,
    start_listener,
    start_worker,
    unique,
    wait_until,
)

pytestmark = pytest.mark.integration
__all__ = ["broker_listener"]  # the fixture, imported to be used here

EJABBERD = [matrix_param("ejabberd", "5")]


def message(i: int) -> list[object]:
    return [f"traksense/t/s/d{i}/telem", f'{{"n":{i}}}'.encode(), 1.5 + i]


def test_a_chunk_takes_its_staged_messages_off_the_list_once_as_it_is_recorded(redis_db: int) -> None:
    client = redis.Redis(host=REDIS_HOST, port=6379, db=redis_db)
    staged = StagedMessages(client, "listener-a")
    ledger = SentChunks(client, staged.key)
    staged.stage([message(0), message(1)])
    staged.stage([message(2)])
    assert staged.left_over() == (0, [message(0), message(1), message(2)])
    ledger.record("c1", [message(0), message(1)], 100.0, staged_upto=2)
    ledger.record("c1", [message(0), message(1)], 101.0, staged_upto=2)  # a retry after a lost reply
    assert staged.left_over() == (2, [message(2)])
    assert client.zscore(SENT, "c1") == 101.0 and client.hexists(BODY, "c1")
    ledger.record("c2", [message(3)], 102.0)  # no staged message in it: the list is left alone
    assert staged.left_over() == (2, [message(2)]) and client.get(staged.key + TAKEN_SUFFIX) == b"2"


@pytest.mark.parametrize("broker_listener", EJABBERD, indirect=True)
def test_a_listener_killed_while_staging_on_ejabberd_loses_and_repeats_nothing(
    database_url: str, redis_db: int, log_dir: Path, broker_listener: BrokerListener
) -> None:
    broker = broker_listener.broker
    prefix, tenant = unique("ts"), unique("t")
    env = service_env(database_url, redis_db, prefix, INGEST_BATCH_MS="250", **broker_listener.env)
    staged = StagedMessages(redis.Redis(host=REDIS_HOST, port=6379, db=redis_db), broker_listener.client_id)
    worker = start_worker(env, log_dir)
    first = start_listener(env, log_dir, name="listener-killed")
    user, password = broker.device_login or (None, None)
    load = SteadyLoad(broker.host, broker.port, user, password, prefix, tenant, 2000, 3)  # 2,000 a second for 3 s
    reports: list[SteadyReport] = []
    publishing = threading.Thread(target=lambda: reports.append(publish_steadily(load, unique("test-pub-"))))
    publishing.start()
    try:
        wait_until(lambda: len(staged.left_over()[1]) >= 50, 20, 0.002, what="staged messages")
        first.kill_group()  # SIGKILL with messages staged and acknowledged, their chunk not sent
        left = len(staged.left_over()[1])
        publishing.join(60)
        assert reports and reports[0].error == "" and reports[0].acked == load.messages, reports
        second = start_listener(env, log_dir, name="listener-restarted")
        try:
            wait_until(lambda: count(database_url, "ts_measure", tenant) >= load.messages, 60, what="every row")
        finally:
            assert second.stop() == 0
    finally:
        first.kill_group()
        worker.stop()
    (rows, distinct), = query(database_url, "SELECT count(*), count(DISTINCT (device_id, ts)) FROM ts_measure "
                                            "WHERE tenant_id = %s", (tenant,))
    assert rows == distinct == load.messages
    assert f"sending {left} messages a previous listener staged" in second.log()
    assert staged.left_over()[1] == []
    assert "mqtt session lost" not in first.log() + second.log()

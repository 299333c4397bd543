"""Staging (`listener.staging`): messages made safe in Redis and acknowledged before their chunk goes out.

The Redis side against the real Redis: a chunk takes its staged messages off the list in the same
step that records it, and recording it again takes nothing more. Then the listener on ejabberd's
mod_mqtt, which sends a session one unacknowledged QoS 1 message at a time: a steady load is stored
exactly once on one connection, and a listener SIGKILLed while it stages loses nothing.
"""

from __future__ import annotations

import threading
import time
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
    free_port,
    query,
    scrape,
    service_env,
    start_listener,
    start_worker,
    unique,
    wait_until,
)

pytestmark = pytest.mark.integration
__all__ = ["broker_listener"]  # the fixture, imported to be used here

EJABBERD = [matrix_param("ejabberd", "5")]
RATE, SECONDS = 2000, 20  # messages a second, for this long


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
def test_a_steady_load_on_ejabberd_is_stored_exactly_once_by_staging(
    database_url: str, redis_db: int, log_dir: Path, broker_listener: BrokerListener
) -> None:
    broker = broker_listener.broker
    prefix, tenant, port = unique("ts"), unique("t"), free_port()
    env = service_env(database_url, redis_db, prefix, METRICS_PORT=str(port), INGEST_BATCH_MS="250",
                      **broker_listener.env)
    worker = start_worker(env, log_dir)
    listener = start_listener(env, log_dir)
    try:
        user, password = broker.device_login or (None, None)
        load = SteadyLoad(broker.host, broker.port, user, password, prefix, tenant, RATE, SECONDS)
        started = time.monotonic()
        report = publish_steadily(load, unique("test-steady-pub-"))
        assert report.error == "" and report.sent == load.messages == report.acked, report
        wait_until(lambda: scrape(port)["ingest_listener_received_total"] >= load.messages, 60, 0.1,
                   what="every message received")
        elapsed = time.monotonic() - started
        print(f"ejabberd: {load.messages} messages received in {elapsed:.1f} s: "
              f"{load.messages / elapsed:.0f} msg/s; staged {scrape(port)['ingest_listener_staged_total']:.0f}")
        wait_until(lambda: count(database_url, "ts_measure", tenant) >= load.messages, 30, 0.5, what="every row")
        assert scrape(port)["ingest_listener_staged_total"] > 0
    finally:
        assert listener.stop() == 0
        worker.stop()
    (rows, distinct), = query(database_url, "SELECT count(*), count(DISTINCT (device_id, ts)) FROM ts_measure "
                                            "WHERE tenant_id = %s", (tenant,))
    assert rows == distinct == load.messages
    log = listener.log()
    assert log.count("mqtt connected (") == 1, log[-3000:]
    assert "mqtt session lost" not in log and "disconnected the listener" not in log


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
    load = SteadyLoad(broker.host, broker.port, user, password, prefix, tenant, RATE, 3)
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

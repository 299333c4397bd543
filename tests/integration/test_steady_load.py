"""A steady load on each broker: thousands of messages a second for 20 seconds through the listener
and the workers into PostgreSQL, every message stored exactly once, on one connection that never drops.

The publisher runs in a process of its own at a fixed rate (`tests.steady_publisher`), so a
listener that falls behind shows as the broker's backlog, not as a slower publisher.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.brokers import BrokerListener, broker_listener, matrix_param
from tests.steady_publisher import SteadyLoad, publish_steadily
from tests.support import count, free_port, query, scrape, service_env, start_listener, start_worker, unique, wait_until

pytestmark = pytest.mark.integration
__all__ = ["broker_listener"]  # the fixture, imported to be used here

SECONDS = 20
# ejabberd sends a session one QoS 1 message at a time, so the listener stages each in Redis before
# acking it (listener.staging): about 2,000 a second on this machine when it is otherwise idle; the
# broker's queue (max_queue, which scripts/brokers.sh raises as docs/brokers.md advises) holds what
# a busier machine leaves until the listener catches up.
RATES = {"mosquitto": 3000, "rabbitmq": 3000, "ejabberd": 2000}  # messages a second
STEADY_BROKERS = [matrix_param("mosquitto", "5"), matrix_param("rabbitmq", "3.1.1"), matrix_param("ejabberd", "5")]
CATCH_UP_S = 40  # after the last publish: ejabberd's queue drains at the listener's staging rate


@pytest.mark.parametrize("broker_listener", STEADY_BROKERS, indirect=True)
def test_a_steady_load_is_stored_exactly_once_on_one_connection(
    database_url: str, redis_db: int, log_dir: Path, broker_listener: BrokerListener
) -> None:
    broker = broker_listener.broker
    prefix, tenant, port = unique("ts"), unique("t"), free_port()
    env = service_env(database_url, redis_db, prefix, METRICS_PORT=str(port), **broker_listener.env)
    worker = start_worker(env, log_dir)
    listener = start_listener(env, log_dir)
    try:
        user, password = broker.device_login or (None, None)
        load = SteadyLoad(broker.host, broker.port, user, password, prefix, tenant, RATES[broker.name], SECONDS)
        report = publish_steadily(load, unique("test-steady-pub-"))
        assert report.error == "" and report.sent == load.messages == report.acked, report
        assert report.seconds < SECONDS * 1.25, f"the broker slowed the publisher: {report}"
        wait_until(lambda: count(database_url, "ts_measure", tenant) >= load.messages, CATCH_UP_S, 0.5,
                   what="every row")
        metrics = scrape(port)
        assert metrics["ingest_listener_received_total"] == load.messages  # nothing redelivered
        if broker.name == "ejabberd":
            assert metrics["ingest_listener_staged_total"] > 0, "one message in flight: the listener stages"
    finally:
        assert listener.stop() == 0
        worker.stop()
    (rows, distinct), = query(database_url, "SELECT count(*), count(DISTINCT (device_id, ts)) FROM ts_measure "
                                            "WHERE tenant_id = %s", (tenant,))
    assert rows == distinct == load.messages
    log = listener.log()
    assert log.count("mqtt connected (") == 1, log[-3000:]
    assert "mqtt session lost" not in log and "disconnected the listener" not in log

"""Mosquitto -> listener -> Redis -> worker -> PostgreSQL, on the real services."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ingest_tasks.app import create_app
from ingest_tasks.envelope import QUEUE, TASK_NAME
from ingest_tasks.settings import Settings
from tests.integration.conftest import Pipeline
from tests.support import count, execute, publisher, query, unique, wait_until

pytestmark = pytest.mark.integration

V1 = {
    "schema": "v1", "ts": "2025-10-07T15:30:00Z",
    "points": [{"name": "temp_agua", "t": "float", "v": 7.3, "u": "°C"},
               {"name": "compressor_1_on", "t": "bool", "v": True},
               {"name": "mode", "t": "enum", "v": "AUTO"},
               {"name": "starts", "t": "int", "v": 42},
               {"name": "note", "t": "text", "v": "ok"}],
    "meta": {"fw": "1.2.3"},
}


def measures(p: Pipeline, tenant: str) -> list[tuple[Any, ...]]:
    return query(p.database_url, "SELECT device_id, point_id, ts, v_num, v_bool, v_text, unit, meta "
                 "FROM ts_measure WHERE tenant_id = %s ORDER BY device_id, ts, point_id", (tenant,))


def dead_letters(p: Pipeline, where: str, *params: object) -> list[tuple[Any, ...]]:
    return query(p.database_url, "SELECT tenant_id, topic, payload, reason, detail FROM ingest_errors "
                 f"WHERE {where} ORDER BY id", params)


def wait_rows(p: Pipeline, table: str, tenant: str, n: int) -> None:
    wait_until(lambda: count(p.database_url, table, tenant) >= n, what=f"{n} rows in {table} for {tenant}")


def test_v1_telemetry_lands_with_each_type_in_its_column(pipeline: Pipeline) -> None:
    tenant = unique("t")
    with publisher() as pub:
        pub.publish(pipeline.topic(tenant, "chiller-1"), V1)
    wait_rows(pipeline, "ts_measure", tenant, 5)
    ts = datetime(2025, 10, 7, 15, 30, tzinfo=UTC)
    meta = {"fw": "1.2.3"}
    assert measures(pipeline, tenant) == [
        ("chiller-1", "compressor_1_on", ts, None, True, None, None, meta),
        ("chiller-1", "mode", ts, None, None, "AUTO", None, meta),
        ("chiller-1", "note", ts, None, None, "ok", None, meta),
        ("chiller-1", "starts", ts, 42.0, None, None, None, meta),
        ("chiller-1", "temp_agua", ts, 7.3, None, None, "°C", meta),
    ]


def test_parsec_payload_is_normalized(pipeline: Pipeline) -> None:
    tenant = unique("t")
    payload = {"di1": 1, "di2": 0, "rssi": -68, "fw": "1.2.3", "ts": "2025-10-07T15:32:00Z"}
    with publisher() as pub:
        pub.publish(pipeline.topic(tenant, "inv-7"), payload)
    wait_rows(pipeline, "ts_measure", tenant, 3)
    ts = datetime(2025, 10, 7, 15, 32, tzinfo=UTC)
    meta = {"src": "parsec_v1", "fw": "1.2.3"}
    assert measures(pipeline, tenant) == [
        ("inv-7", "fault", ts, None, False, None, None, meta),
        ("inv-7", "rssi", ts, -68.0, None, None, "dBm", meta),
        ("inv-7", "status", ts, None, None, "RUN", None, meta),
    ]


def test_a_repeated_ack_keeps_one_row_and_a_later_ack_updates_it(pipeline: Pipeline) -> None:
    tenant = unique("t")
    first = {"schema": "v1", "cmd_id": "01HQXYZ", "ok": False, "ts_exec": None, "err": "busy"}
    later = {"schema": "v1", "cmd_id": "01HQXYZ", "ok": True, "ts_exec": "2025-10-07T02:34:15Z"}
    topic = pipeline.topic(tenant, "pump-2", "ack")
    with publisher() as pub:
        pub.publish(topic, first)
        pub.publish(topic, first)
    wait_rows(pipeline, "cmd_ack", tenant, 1)
    with publisher() as pub:
        pub.publish(topic, later)

    def updated() -> list[tuple[Any, ...]]:
        return [r for r in query(pipeline.database_url, "SELECT cmd_id, ok, ts_exec, err, payload FROM cmd_ack "
                                 "WHERE tenant_id = %s", (tenant,)) if r[1]]

    rows = wait_until(updated, what="the later ack")
    assert rows == [("01HQXYZ", True, datetime(2025, 10, 7, 2, 34, 15, tzinfo=UTC), None, later)]
    assert count(pipeline.database_url, "cmd_ack", tenant) == 1


def test_events_are_stored_once_with_severity_default(pipeline: Pipeline) -> None:
    tenant = unique("t")
    topic = pipeline.topic(tenant, "pump-3", "event")
    startup = {"schema": "v1", "ts": "2025-10-07T02:34:15Z", "type": "startup", "data": {"reason": "power"}}
    alarm = {"schema": "v1", "ts": "2025-10-07T02:35:00+02:00", "type": "high_temp", "severity": "critical"}
    with publisher() as pub:
        for payload in (startup, startup, alarm):
            pub.publish(topic, payload)
    wait_rows(pipeline, "device_event", tenant, 2)
    rows = query(pipeline.database_url, "SELECT ts, type, severity, data FROM device_event "
                 "WHERE tenant_id = %s ORDER BY ts", (tenant,))
    assert rows == [
        (datetime(2025, 10, 7, 0, 35, tzinfo=UTC), "high_temp", "critical", None),
        (datetime(2025, 10, 7, 2, 34, 15, tzinfo=UTC), "startup", "info", {"reason": "power"}),
    ]


@pytest.mark.parametrize(("kind", "payload", "reason", "detail"), [
    pytest.param("telem", b"\xff\xfe\x00binary", "invalid_json", "not UTF-8 JSON", id="invalid utf-8"),
    pytest.param("telem", b'{"schema": "v1", "ts": NaN}', "invalid_json", "not UTF-8 JSON", id="NaN token"),
    pytest.param("telem", b'{"schema": "v1"} trailing', "invalid_json", "not UTF-8 JSON", id="trailing garbage"),
    pytest.param("telem", b'{"schema": "v1", "ts": "2025-10-07T15:30:00", "points": []}', "validation_error",
                 "ts", id="ts without offset"),
    pytest.param("telem", b'{"schema": "v1", "ts": "2025-10-07T15:30:00Z", "points": '
                 b'[{"name": "x", "t": "int", "v": 1.5}]}', "validation_error", "points.0.v", id="int with fraction"),
    pytest.param("telem", b'{"schema": "v9", "ts": "2025-10-07T15:30:00Z"}', "unknown_schema", "adapter",
                 id="unknown schema"),
    pytest.param("ack", b'{"schema": "v1", "ok": true}', "validation_error", "cmd_id", id="ack without cmd_id"),
    pytest.param("telem", b"[" + b"1," * 3000 + b"1]", "payload_too_large", "INGEST_MAX_PAYLOAD_BYTES",
                 id="too large"),
])
def test_each_invalid_message_is_dead_lettered_byte_exact(
    pipeline: Pipeline, kind: str, payload: bytes, reason: str, detail: str
) -> None:
    tenant = unique("t")
    topic = pipeline.topic(tenant, "dev", kind)
    with publisher() as pub:
        pub.publish(topic, payload)
    rows = wait_until(lambda: dead_letters(pipeline, "tenant_id = %s", tenant), what="the dead letter")
    assert len(rows) == 1
    assert rows[0][:4] == (tenant, topic, payload, reason)
    assert detail in rows[0][4]


def test_a_mixed_chunk_keeps_every_valid_message(pipeline: Pipeline) -> None:
    tenant = unique("t")
    with publisher() as pub:
        for i in range(30):
            if i % 3 == 0:
                pub.publish(pipeline.topic(tenant, f"d{i}"), b"{not json")
            else:
                point = {"name": "p", "t": "float", "v": float(i)}
                pub.publish(pipeline.topic(tenant, f"d{i}"), {**V1, "points": [point]})
    wait_rows(pipeline, "ts_measure", tenant, 20)
    wait_rows(pipeline, "ingest_errors", tenant, 10)
    assert sorted(r[3] for r in measures(pipeline, tenant)) == [float(i) for i in range(30) if i % 3]
    assert count(pipeline.database_url, "ingest_errors", tenant) == 10


def test_out_of_order_timestamps_are_all_stored(pipeline: Pipeline) -> None:
    tenant = unique("t")
    stamps = ["2025-10-07T15:30:00Z", "2025-10-07T15:10:00Z", "2025-10-07T15:20:00Z", "2024-01-01T00:00:00Z"]
    with publisher() as pub:
        for ts in stamps:
            pub.publish(pipeline.topic(tenant, "d"), {**V1, "ts": ts, "points": [{"name": "p", "t": "int", "v": 1}]})
    wait_rows(pipeline, "ts_measure", tenant, 4)
    got = sorted(r[2] for r in measures(pipeline, tenant))
    assert got == sorted(datetime.fromisoformat(ts) for ts in stamps)


def test_the_same_chunk_twice_adds_rows_once(pipeline: Pipeline) -> None:
    tenant = unique("t")
    ack = b'{"schema": "v1", "cmd_id": "c1", "ok": true}'
    messages = [
        [pipeline.topic(tenant, "d"), b'{"schema":"v1","ts":"2025-10-07T15:30:00Z","points":'
         b'[{"name":"a","t":"float","v":1},{"name":"b","t":"bool","v":false}]}', 1.0],
        [pipeline.topic(tenant, "d", "ack"), ack, 1.0],
        [pipeline.topic(tenant, "d"), b"garbage", 1.0],
    ]
    app = create_app(Settings(CELERY_BROKER_URL=pipeline.redis_url))
    chunk_id = unique("chunk-")
    for _ in range(2):
        app.send_task(TASK_NAME, args=(chunk_id, messages), queue=QUEUE)
    pipeline.worker.wait_for_log(f"chunk {chunk_id}: messages=3", count=2)
    assert count(pipeline.database_url, "ts_measure", tenant) == 2
    assert count(pipeline.database_url, "cmd_ack", tenant) == 1
    assert count(pipeline.database_url, "ingest_errors", tenant) == 1


def test_a_chunk_from_a_listener_before_compression_is_stored(pipeline: Pipeline) -> None:
    tenant = unique("t")
    messages = [[pipeline.topic(tenant, "d"), orjson.dumps({**V1, "points": [{"name": "p", "t": "int", "v": 1}]}), 1.0]]
    app = create_app(Settings(CELERY_BROKER_URL=pipeline.redis_url))
    app.conf.task_compression = None  # as listeners sent chunks until then
    app.send_task(TASK_NAME, args=(unique("chunk-"), messages), queue=QUEUE)
    wait_rows(pipeline, "ts_measure", tenant, 1)


@pytest.mark.parametrize("levels", [
    pytest.param(("t", "s", "d"), id="too few levels"),
    pytest.param(("t", "s", "d", "telem", "extra"), id="too many levels"),
    pytest.param(("t", "", "d", "telem"), id="empty site"),
    pytest.param(("t", "s", "d", "status"), id="unknown kind"),
])
def test_a_topic_of_the_wrong_shape_is_dead_lettered_without_tenant(
    pipeline: Pipeline, levels: tuple[str, ...]
) -> None:
    topic = pipeline.odd_topic(*levels).replace("/t/", f"/{unique('t')}/", 1)
    payload = orjson.dumps(V1)
    with publisher() as pub:
        pub.publish(topic, payload)
    rows = wait_until(lambda: dead_letters(pipeline, "topic = %s", topic), what="the dead letter")
    assert [r[:4] for r in rows] == [(None, topic, payload, "invalid_topic")]
    assert "topic" in rows[0][4]


def test_a_message_the_database_refuses_is_dead_lettered_and_its_chunk_stored(pipeline: Pipeline) -> None:
    tenant = unique("t")
    # An operator's constraint: the database refuses one message's rows, not the chunk's.
    constraint = unique("v_num_sane_")
    # ts_measure is a view: the constraint goes on ts_reading, whose rows carry the tenant's number.
    ((number,),) = query(pipeline.database_url, "INSERT INTO ts_tenant (tenant_id) VALUES (%s) ON CONFLICT (tenant_id) "
                         "DO UPDATE SET tenant_id = EXCLUDED.tenant_id RETURNING tenant_no", (tenant,))
    execute(pipeline.database_url, f"ALTER TABLE ts_reading ADD CONSTRAINT {constraint} "
          f"CHECK (tenant_no <> {number} OR 1e300 > ALL (v_num)) NOT VALID")
    try:
        with publisher() as pub:
            for i, value in enumerate([1.0, 1e301, 2.0]):
                point = {"name": "p", "t": "float", "v": value}
                pub.publish(pipeline.topic(tenant, f"d{i}"), {**V1, "points": [point]})
        rows = wait_until(lambda: dead_letters(pipeline, "tenant_id = %s", tenant), what="the dead letter")
        wait_rows(pipeline, "ts_measure", tenant, 2)
    finally:
        execute(pipeline.database_url, f"ALTER TABLE ts_reading DROP CONSTRAINT {constraint}")
    assert [(r[1], r[3]) for r in rows] == [(pipeline.topic(tenant, "d1"), "db_rejected")]
    assert constraint in rows[0][4]
    assert sorted(r[3] for r in measures(pipeline, tenant)) == [1.0, 2.0]

"""The DLQ tooling, `python -m ingest_tasks.dlq`, run as a real process against real dead letters.

The module has a database of its own: one test adds a constraint to refuse a replayed message,
and rows of every tenant are purged. Each test still uses its own tenant ids.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from ingest_tasks.dlq.queries import purge_dead_letters
from tests.conftest import fresh_backend_database
from tests.support import ROOT, count, execute, query, unique

pytestmark = pytest.mark.integration

TS = "2025-10-07T15:30:00Z"


@pytest.fixture(scope="module")
def db(backend: str) -> Iterator[str]:
    with fresh_backend_database(backend, "traksense_dlq_") as url:
        yield url


@pytest.fixture
def empty_db(backend: str) -> Iterator[str]:
    """A database whose DLQ holds only what the test puts there, for purges of every tenant."""
    with fresh_backend_database(backend, "traksense_dlq_") as url:
        yield url


def dlq(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DLQ_"))}
    return subprocess.run(
        [sys.executable, "-m", "ingest_tasks.dlq", *args], cwd=ROOT, capture_output=True, text=True,
        check=False, timeout=60, env={**environ, "DATABASE_URL": database_url, **env},
    )


def dead_letter(database_url: str, tenant: str | None, payload: bytes, reason: str = "invalid_json",
                age_days: float = 0, topic: str | None = None, detail: str = "it was wrong") -> int:
    topic = topic or f"traksense/{tenant}/s1/d1/telem"
    rows = query(database_url, "INSERT INTO ingest_errors (tenant_id, topic, payload, reason, detail, ts) "
                 "VALUES (%s, %s, %s, %s, %s, now() - %s * interval '1 day') RETURNING id",
                 (tenant, topic, payload, reason, detail, age_days))
    return int(rows[0][0])


def listed(database_url: str, *args: str) -> list[dict[str, object]]:
    result = dlq(database_url, "list", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def listed_ids(database_url: str, *args: str) -> list[int]:
    return [int(str(entry["id"])) for entry in listed(database_url, *args)]


def remaining(database_url: str, tenant: str) -> list[int]:
    return [r[0] for r in query(database_url, "SELECT id FROM ingest_errors WHERE tenant_id = %s ORDER BY id",
                                (tenant,))]


def telem(value: float, point: str = "temp") -> bytes:
    points = [{"name": point, "t": "float", "v": value}]
    return json.dumps({"schema": "v1", "ts": TS, "points": points}).encode()


def test_list_filters_by_tenant_reason_and_age(db: str) -> None:
    acme, other = unique("acme-"), unique("other-")
    new_json = dead_letter(db, acme, b"{", "invalid_json")
    old_json = dead_letter(db, acme, b"{", "invalid_json", age_days=20)
    old_schema = dead_letter(db, acme, b"{}", "unknown_schema", age_days=40)
    dead_letter(db, other, b"{", "invalid_json", age_days=30)

    assert listed_ids(db, "--tenant", acme) == [new_json, old_json, old_schema]
    assert listed_ids(db, "--tenant", acme, "--reason", "invalid_json") == [new_json, old_json]
    assert listed_ids(db, "--tenant", acme, "--older-than", "10") == [old_json, old_schema]
    assert listed_ids(db, "--tenant", acme, "--older-than", "30") == [old_schema]
    assert listed_ids(db, "--tenant", acme, "--reason", "invalid_json", "--older-than", "10") == [old_json]
    assert set(listed_ids(db)) >= {new_json, old_json, old_schema}


def test_list_selects_each_repeated_id_and_honours_limit(db: str) -> None:
    tenant = unique("ids-")
    ids = [dead_letter(db, tenant, b"x") for _ in range(4)]

    assert listed_ids(db, "--id", str(ids[0]), "--id", str(ids[2])) == [ids[0], ids[2]]
    assert listed_ids(db, "--id", str(ids[1]), "--tenant", unique("nobody-")) == []
    assert listed_ids(db, "--tenant", tenant, "--limit", "3") == ids[:3]


def test_list_prints_a_readable_table(db: str) -> None:
    tenant = unique("table-")
    long_detail = "points[0].v: expected a number\x1b[31m " + "x" * 200
    entry = dead_letter(db, tenant, b"\x00" * 17, "validation_error", detail=long_detail)

    result = dlq(db, "list", "--tenant", tenant)

    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split() == ["id", "time", "(UTC)", "tenant", "reason", "topic", "bytes", "detail"]
    assert row.split()[:7] == [str(entry), *row.split()[1:3], tenant, "validation_error",
                               f"traksense/{tenant}/s1/d1/telem", "17"]
    assert "points[0].v: expected a number\\x1b[31m" in row
    assert "\x1b" not in row and row.endswith("…") and "x" * 200 not in row
    assert "(1 dead letter)" in result.stderr


def test_list_json_lines_round_trip_the_payload_bytes(db: str) -> None:
    tenant = unique("json-")
    payload = bytes(range(256)) + "é\u0000".encode()
    entry = dead_letter(db, tenant, payload, "invalid_json", detail="payload is not UTF-8 JSON")

    (line,) = listed(db, "--tenant", tenant)

    assert base64.b64decode(str(line["payload_base64"])) == payload
    assert line["payload_size"] == len(payload)
    assert {k: line[k] for k in ("id", "tenant_id", "topic", "reason", "detail")} == {
        "id": entry, "tenant_id": tenant, "topic": f"traksense/{tenant}/s1/d1/telem",
        "reason": "invalid_json", "detail": "payload is not UTF-8 JSON",
    }
    assert str(line["ts"]).endswith("+00:00")


def test_show_prints_every_field_the_text_and_a_hex_dump(db: str) -> None:
    tenant = unique("show-")
    payload = b'{"ts": "\xff\x00",\n"t":\t"\xc3\xa9"}'
    entry = dead_letter(db, tenant, payload, "invalid_json", detail="payload is not UTF-8 JSON: bad byte")

    result = dlq(db, "show", str(entry))

    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in (f"id        {entry}", f"tenant    {tenant}", f"topic     traksense/{tenant}/s1/d1/telem",
                     "reason    invalid_json", "detail    payload is not UTF-8 JSON: bad byte",
                     f"size      {len(payload)} bytes"):
        assert expected in out
    assert '{"ts": "\\xff\\x00",\n"t":\\t"é"}' in out
    assert '00000000: 7b22 7473 223a 2022 ff00 222c 0a22 7422  {"ts": "..",."t"' in out
    assert "00000010: 3a09 22c3 a922 7d" in out


def test_show_of_a_missing_id_exits_1(db: str) -> None:
    result = dlq(db, "show", "987654321")

    assert result.returncode == 1
    assert result.stderr.strip() == "dlq: no dead letter with id 987654321"


def test_an_unknown_reason_is_a_usage_error(db: str) -> None:
    result = dlq(db, "list", "--reason", "nope")

    assert result.returncode == 2
    assert "argument --reason: invalid choice: 'nope'" in result.stderr


def test_replay_leaves_a_still_invalid_message_where_it_is(db: str) -> None:
    tenant = unique("invalid-")
    no_ts = b'{"schema": "v1", "points": []}'
    entry = dead_letter(db, tenant, no_ts, "validation_error", detail="ts: field required")
    before = query(db, "SELECT * FROM ingest_errors WHERE id = %s", (entry,))

    result = dlq(db, "replay", "--tenant", tenant)

    assert result.returncode == 0, result.stderr
    assert "landed=0 still_invalid=1 refused=0" in result.stdout
    assert query(db, "SELECT * FROM ingest_errors WHERE id = %s", (entry,)) == before


def test_replay_lands_a_fixed_message_once_and_removes_only_it(db: str) -> None:
    tenant = unique("fixed-")
    ack = json.dumps({"schema": "v1", "cmd_id": "c1", "ok": True}).encode()
    event = json.dumps({"schema": "v1", "ts": TS, "type": "startup"}).encode()
    landed = [
        dead_letter(db, tenant, telem(7.5), "retries_exhausted"),
        dead_letter(db, tenant, telem(7.5), "retries_exhausted"),  # redelivered: the same rows
        dead_letter(db, tenant, ack, "retries_exhausted", topic=f"traksense/{tenant}/s1/d1/ack"),
        dead_letter(db, tenant, event, "retries_exhausted", topic=f"traksense/{tenant}/s1/d1/event"),
    ]
    invalid = dead_letter(db, tenant, b"\xffnot json", "invalid_json")

    first = dlq(db, "replay", "--tenant", tenant)
    second = dlq(db, "replay", "--tenant", tenant)

    assert first.returncode == 0, first.stderr
    assert "selected=5 landed=4 still_invalid=1 refused=0" in first.stdout
    assert "selected=1 landed=0 still_invalid=1 refused=0" in second.stdout
    assert remaining(db, tenant) == [invalid]
    assert not set(landed) & set(remaining(db, tenant))
    assert query(db, "SELECT device_id, point_id, v_num FROM ts_measure WHERE tenant_id = %s",
                 (tenant,)) == [("d1", "temp", 7.5)]
    assert count(db, "cmd_ack", tenant) == 1
    assert count(db, "device_event", tenant) == 1


def test_replay_uses_the_current_payload_limit(db: str) -> None:
    tenant = unique("large-")
    large = json.dumps({"schema": "v1", "ts": TS, "points": [{"name": "p", "t": "text", "v": "x" * 200}]}).encode()
    entry = dead_letter(db, tenant, large, "payload_too_large")

    still = dlq(db, "replay", "--id", str(entry), INGEST_MAX_PAYLOAD_BYTES="100")
    raised = dlq(db, "replay", "--id", str(entry), INGEST_MAX_PAYLOAD_BYTES="4096")

    assert "landed=0 still_invalid=1" in still.stdout
    assert "landed=1 still_invalid=0" in raised.stdout
    assert remaining(db, tenant) == []
    assert count(db, "ts_measure", tenant) == 1


def test_replay_keeps_a_message_the_database_refuses(db: str) -> None:
    tenant = unique("refused-")
    refused = dead_letter(db, tenant, telem(-1.0), "db_rejected")
    fine = dead_letter(db, tenant, telem(1.0, "other"), "retries_exhausted")
    # ts_measure is a view: the constraint goes on ts_reading, whose rows carry the tenant's number.
    ((number,),) = query(db, "INSERT INTO ts_tenant (tenant_id) VALUES (%s) ON CONFLICT (tenant_id) "
                         "DO UPDATE SET tenant_id = EXCLUDED.tenant_id RETURNING tenant_no", (tenant,))
    execute(db, f"ALTER TABLE ts_reading ADD CONSTRAINT dlq_test_positive "
            f"CHECK (tenant_no <> {number} OR 0 <= ALL (v_num))")
    try:
        result = dlq(db, "replay", "--tenant", tenant)
    finally:
        execute(db, "ALTER TABLE ts_reading DROP CONSTRAINT dlq_test_positive")

    assert result.returncode == 1
    assert "landed=1 still_invalid=0 refused=1" in result.stdout
    assert f"dead letter {refused}: refused by the database" in result.stderr
    assert "dlq_test_positive" in result.stderr
    assert fine not in remaining(db, tenant)
    assert remaining(db, tenant) == [refused]
    assert query(db, "SELECT point_id FROM ts_measure WHERE tenant_id = %s", (tenant,)) == [("other",)]


def test_replayed_rows_are_written_under_their_tenant(db: str) -> None:
    tenant = unique("rls-")
    dead_letter(db, tenant, telem(3.0), "retries_exhausted")

    assert dlq(db, "replay", "--tenant", tenant).returncode == 0

    with psycopg.connect(db) as conn:
        conn.execute("SET ROLE tenant_reader")
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (tenant,))
        assert conn.execute("SELECT v_num FROM ts_measure").fetchall() == [(3.0,)]


def test_replay_reports_progress_per_batch(db: str) -> None:
    tenant = unique("progress-")
    for n in range(5):
        dead_letter(db, tenant, telem(float(n), f"p{n}"), "retries_exhausted")

    result = dlq(db, "replay", "--tenant", tenant, "--batch", "2")

    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stderr.splitlines() if line.startswith("replayed")]
    assert progress == [f"replayed {n}/5: landed={n} still_invalid=0 refused=0" for n in (2, 4, 5)]
    assert count(db, "ts_measure", tenant) == 5


def test_purge_without_a_filter_refuses_and_deletes_nothing(db: str) -> None:
    tenant = unique("refuse-")
    entry = dead_letter(db, tenant, b"x")

    result = dlq(db, "purge")

    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--all" in result.stderr
    assert remaining(db, tenant) == [entry]


def test_purge_deletes_exactly_the_selected_ids(db: str) -> None:
    tenant = unique("purge-ids-")
    ids = [dead_letter(db, tenant, b"x") for _ in range(4)]

    result = dlq(db, "purge", "--id", str(ids[1]), "--id", str(ids[3]))

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "purge: removed=2"
    assert remaining(db, tenant) == [ids[0], ids[2]]


def test_purge_older_than_deletes_exactly_the_old_rows(db: str) -> None:
    tenant = unique("purge-age-")
    young = [dead_letter(db, tenant, b"x", age_days=d) for d in (0, 1, 6.9)]
    for d in (7.1, 8, 30, 90, 365):
        dead_letter(db, tenant, b"x", age_days=d)

    result = dlq(db, "purge", "--tenant", tenant, "--older-than", "7", "--batch", "2")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "purge: removed=5"
    assert [line for line in result.stderr.splitlines() if line.startswith("purged")] == [
        "purged 2/5", "purged 4/5", "purged 5/5"]
    assert remaining(db, tenant) == young


def test_purge_all_empties_the_dlq(empty_db: str) -> None:
    for tenant in (unique("a-"), unique("b-"), None):
        dead_letter(empty_db, tenant, b"x", "invalid_topic" if tenant is None else "invalid_json", topic="t")

    result = dlq(empty_db, "purge", "--all")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "purge: removed=3"
    assert query(empty_db, "SELECT count(*) FROM ingest_errors") == [(0,)]


def test_the_retention_purge_removes_exactly_the_rows_older_than_the_retention(empty_db: str) -> None:
    tenant = unique("beat-")
    kept = [dead_letter(empty_db, tenant, b"x", age_days=d) for d in (1, 13, 13.9)]
    for d in (14.1, 15, 30):
        dead_letter(empty_db, tenant, b"x", age_days=d)
    dead_letter(empty_db, None, b"x", "invalid_topic", age_days=20, topic="no-tenant")

    removed = purge_dead_letters(empty_db, 14, batch=2)

    assert removed == 4
    assert remaining(empty_db, tenant) == kept
    assert query(empty_db, "SELECT count(*) FROM ingest_errors WHERE tenant_id IS NULL") == [(0,)]
    assert purge_dead_letters(empty_db, 14, batch=2) == 0


def test_an_unreachable_database_is_one_line_and_exit_1() -> None:
    result = dlq("postgresql://postgres@127.0.0.1:1/nowhere", "list")

    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("dlq: database unavailable:")


def test_a_bad_setting_exits_2_naming_the_variable() -> None:
    result = dlq("mysql://nowhere", "list")

    assert result.returncode == 2
    assert result.stderr.strip().startswith("invalid setting DATABASE_URL")

"""The shipped PostgreSQL roles (deploy/postgres/init-roles.sh + the migrations), on real PostgreSQL.

The database is made as in docker-compose.yml: the superuser runs the init script, then the
migrations run as the owner's login, not as a superuser. Then each login is tried for what it
must and must not do: the workers' cannot see or write another tenant's rows, get around
row-level security or change the schema; the DLQ operator's sees and clears every tenant's dead
letters but writes measurements only by replaying as the writer; the workers' purge deletes only
old dead letters. The local server trusts 127.0.0.1, so the logins need no password here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import errors, sql

from ingest_tasks.dlq.queries import purge_dead_letters
from migrations.runner import apply_pending, discover
from tests.conftest import fresh_redis_db
from tests.support import (
    PG_ADMIN,
    REDIS_HOST,
    ROOT,
    count,
    publisher,
    query,
    service_env,
    start_listener,
    start_worker,
    unique,
    wait_until,
)
from tests.timescale.cluster import admin_url as timescale_admin_url

pytestmark = pytest.mark.integration

INIT_SCRIPT = ROOT / "deploy" / "postgres" / "init-roles.sh"
OWNER, WORKER, OPERATOR = "traksense_owner", "traksense_worker", "traksense_dlq"
TS = "2025-10-07T15:30:00Z"
LAST_BEFORE_ROLES = 7  # the last migration the superuser applied before migration 0008's roles


@pytest.fixture(scope="module", params=["postgresql", "timescaledb"])
def server(request: pytest.FixtureRequest) -> str:
    """The superuser URL of the server: the shared PostgreSQL, or the test-owned TimescaleDB
    cluster, where ts_point (under the ts_measure view) is a hypertable whose chunks the worker's
    inserts create."""
    return PG_ADMIN if request.param == "postgresql" else timescale_admin_url()


@pytest.fixture(scope="module", params=["first-start", "upgraded", "make-run"])
def db(server: str, request: pytest.FixtureRequest) -> Iterator[Db]:
    """A database set up as the compose stack sets it up: at its first start; or migrated by the
    superuser up to 0007 (before these roles) or to the end (as `make run` does), then given the
    roles by the init script run on it by hand."""
    name = unique("traksense_roles_")
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database = Db(server, name)
    try:
        if request.param != "first-start":
            last = LAST_BEFORE_ROLES if request.param == "upgraded" else discover()[-1].version
            apply_pending(database.admin, [m for m in discover() if m.version <= last])
            seed(database, unique("old-"))
        run_init_script(server, name)
        apply_pending(database.login(OWNER))
        yield database
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def run_init_script(server: str, dbname: str) -> None:
    admin = psycopg.conninfo.conninfo_to_dict(server)
    env = {**os.environ, "PGHOST": str(admin.get("host", "127.0.0.1")), "PGPORT": str(admin.get("port", 5432)),
           "POSTGRES_USER": str(admin.get("user", "postgres")), "POSTGRES_DB": dbname,
           "TRAKSENSE_OWNER_PASSWORD": unique("o"), "TRAKSENSE_WORKER_PASSWORD": unique("w"),
           "TRAKSENSE_DLQ_PASSWORD": unique("d")}
    result = subprocess.run([str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


@dataclass(frozen=True)
class Db:
    server: str
    name: str

    @property
    def admin(self) -> str:
        """The superuser's URL of this database."""
        return self.server.rsplit("/", 1)[0] + f"/{self.name}"

    def login(self, role: str) -> str:
        return self.admin.replace("postgres@", f"{role}@", 1)


def connect(role: str, db: Db, tenant: str | None = None) -> psycopg.Connection[tuple[object, ...]]:
    conn = psycopg.connect(db.login(role), autocommit=True)
    if tenant is not None:
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (tenant,))
    return conn


def seed(db: Db, tenant: str) -> None:
    """One row of `tenant` in every table, written as the superuser."""
    url = db.admin
    query(url, "INSERT INTO ts_measure (tenant_id, device_id, point_id, ts, v_num) VALUES (%s, 'd1', 'p', %s, 1) "
          "RETURNING 1", (tenant, TS))
    query(url, "INSERT INTO cmd_ack (tenant_id, device_id, cmd_id, ok) VALUES (%s, 'd1', 'c1', true) RETURNING 1",
          (tenant,))
    query(url, "INSERT INTO device_event (tenant_id, device_id, ts, type) VALUES (%s, 'd1', %s, 'boot') RETURNING 1",
          (tenant, TS))
    dead_letter(db, tenant, b"{")


def dead_letter(db: Db, tenant: str | None, payload: bytes, age_days: float = 0) -> int:
    rows = query(db.admin, "INSERT INTO ingest_errors (tenant_id, topic, payload, reason, ts) "
                 "VALUES (%s, %s, %s, 'invalid_json', now() - %s * interval '1 day') RETURNING id",
                 (tenant, f"traksense/{tenant}/s1/d1/telem", payload, age_days))
    return int(rows[0][0])


def telem(value: float) -> bytes:
    return json.dumps({"schema": "v1", "ts": TS, "points": [{"name": "temp", "t": "float", "v": value}]}).encode()


# --- who the logins are -----------------------------------------------------------------------


@pytest.mark.parametrize(("role", "group"), [(WORKER, "ingest_writer"), (OPERATOR, "dlq_operator")])
def test_login_is_a_plain_member_of_one_group(db: Db, role: str, group: str) -> None:
    attrs = query(db.admin, "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles "
                  "WHERE rolname = %s", (role,))
    assert attrs == [(False, False, False, False)]
    groups = query(db.admin, "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                   "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = %s", (role,))
    assert groups == [(group,)]
    owned = query(db.admin, "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner "
                  "WHERE r.rolname = %s", (role,))
    assert owned == [(0,)]


def test_migrations_ran_as_the_owner_who_is_no_superuser(db: Db) -> None:
    owners = query(db.admin, "SELECT DISTINCT r.rolname, r.rolsuper FROM pg_class c "
                   "JOIN pg_roles r ON r.oid = c.relowner WHERE c.relname IN "
                   "('ts_measure', 'ts_reading', 'ts_point', 'ts_series', 'ts_device', 'ts_tenant', 'cmd_ack', "
                   "'device_event', 'ingest_errors')")
    assert owners == [(OWNER, False)]


# --- the workers' login -----------------------------------------------------------------------

TENANT_TABLES = ("ts_measure", "cmd_ack", "device_event", "ingest_errors")


@pytest.mark.parametrize("table", TENANT_TABLES)
def test_worker_sees_only_its_tenants_rows(db: Db, table: str) -> None:
    mine, theirs = unique("a-"), unique("b-")
    seed(db, mine)
    seed(db, theirs)
    with connect(WORKER, db, mine) as conn:
        rows = conn.execute(sql.SQL("SELECT DISTINCT tenant_id FROM {}").format(sql.Identifier(table))).fetchall()
    assert rows == [(mine,)]


def test_worker_login_reaches_no_timescaledb_chunk(db: Db) -> None:
    seed(db, unique("a-"))  # on TimescaleDB, a chunk for TS
    chunks = [r[0] for r in query(db.admin, "SELECT inhrelid::regclass::text FROM pg_inherits "
                                  "WHERE inhparent = 'ts_reading'::regclass")]
    assert bool(chunks) == (db.server != PG_ADMIN)  # a hypertable on TimescaleDB only
    for chunk in chunks:
        for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            assert query(db.admin, "SELECT has_table_privilege(%s, %s, %s)", (WORKER, chunk, privilege)) == [
                (False,)], f"{chunk}: {privilege}"


@pytest.mark.parametrize("statement", [
    "INSERT INTO ts_measure (tenant_id, device_id, point_id, ts, v_num) VALUES (%s, 'd9', 'p', now(), 1)",
    "INSERT INTO cmd_ack (tenant_id, device_id, cmd_id, ok) VALUES (%s, 'd9', 'c9', true)",
    "INSERT INTO device_event (tenant_id, device_id, ts, type) VALUES (%s, 'd9', now(), 'x')",
    "INSERT INTO ingest_errors (tenant_id, topic, payload, reason) VALUES (%s, 't', '', 'invalid_json')",
])
def test_worker_cannot_write_another_tenants_rows(db: Db, statement: str) -> None:
    mine, theirs = unique("a-"), unique("b-")
    with connect(WORKER, db, mine) as conn, pytest.raises(errors.InsufficientPrivilege, match="row-level"):
        conn.execute(statement.encode(), (theirs,))


def test_worker_cannot_change_or_delete_another_tenants_rows(db: Db) -> None:
    mine, theirs = unique("a-"), unique("b-")
    seed(db, theirs)
    with connect(WORKER, db, mine) as conn:
        assert conn.execute("UPDATE cmd_ack SET ok = false WHERE tenant_id = %s", (theirs,)).rowcount == 0
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DELETE FROM ts_point")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DELETE FROM ts_reading")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("UPDATE ts_reading SET v_num = '{0}'")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("UPDATE ts_point SET v_num = 0")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DELETE FROM ts_series WHERE tenant_id = %s", (theirs,))
    assert query(db.admin, "SELECT ok FROM cmd_ack WHERE tenant_id = %s", (theirs,)) == [(True,)]


@pytest.mark.parametrize("statement", [
    "SET row_security = off; SELECT count(*) FROM ts_measure",
    "ALTER TABLE ts_point DISABLE ROW LEVEL SECURITY",
    "ALTER TABLE ts_reading DISABLE ROW LEVEL SECURITY",
    "DROP POLICY tenant_rows ON ts_device",
    "ALTER TABLE ts_series NO FORCE ROW LEVEL SECURITY",
    "DROP POLICY tenant_rows ON ts_tenant",
    "ALTER TABLE ingest_errors NO FORCE ROW LEVEL SECURITY",
    "DROP POLICY tenant_rows ON cmd_ack",
    "CREATE POLICY mine ON cmd_ack USING (true)",
    "SET ROLE traksense_owner",
    "SET ROLE postgres",
    "SET ROLE dlq_operator",
    "SET SESSION AUTHORIZATION postgres",
    "SELECT ingest_purge_dead_letters(-1, 10)",
])
def test_worker_cannot_get_around_row_level_security(db: Db, statement: str) -> None:
    with connect(WORKER, db, unique("a-")) as conn, pytest.raises(
            (errors.InsufficientPrivilege, errors.InvalidParameterValue)):
        conn.execute(statement.encode())


@pytest.mark.parametrize("statement", [
    "CREATE TABLE intruder (x int)",
    "CREATE SCHEMA intruder",
    "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "ALTER TABLE ts_point ADD COLUMN intruder text",
    "DROP VIEW ts_measure",
    "ALTER TABLE cmd_ack ALTER COLUMN err TYPE varchar(10)",
    "DROP TABLE device_event",
    "DROP INDEX ingest_errors_ts",
    "DROP FUNCTION ingest_series(text[], text[], text[])",
    "TRUNCATE ingest_errors",
    "CREATE INDEX intruder ON ts_point (v_num)",
    "ALTER TABLE ingest_errors OWNER TO traksense_worker",
])
def test_worker_cannot_alter_the_schema(db: Db, statement: str) -> None:
    with connect(WORKER, db) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(statement.encode())


def test_workers_purge_deletes_only_old_dead_letters_of_every_tenant(db: Db) -> None:
    tenants = [unique("a-"), unique("b-")]
    old = [dead_letter(db, t, b"{", age_days=20) for t in tenants for _ in range(3)]
    new = [dead_letter(db, t, b"{", age_days=2) for t in tenants]
    removed = purge_dead_letters(db.login(WORKER), older_than_days=14, batch=2)
    assert removed >= len(old)  # other tests' old rows may go too
    left = {r[0] for r in query(db.admin, "SELECT id FROM ingest_errors WHERE id = ANY(%s)", (old + new,))}
    assert left == set(new)


def test_only_the_writer_may_run_the_purge(db: Db) -> None:
    grantees = query(db.admin, "SELECT grantee::regrole::text FROM pg_proc, aclexplode(proacl) "
                     "WHERE proname = 'ingest_purge_dead_letters' AND privilege_type = 'EXECUTE'")
    assert sorted(r[0] for r in grantees) == sorted(["ingest_writer", OWNER])


# --- the DLQ operator's login -----------------------------------------------------------------


def dlq(db: Db, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DLQ_", "DATABASE_URL"))}
    return subprocess.run([sys.executable, "-m", "ingest_tasks.dlq", *args], cwd=ROOT, capture_output=True,
                          text=True, check=False, timeout=60, env={**environ, "DATABASE_URL": db.login(OPERATOR)})


def test_operator_lists_every_tenants_dead_letters(db: Db) -> None:
    a, b = unique("a-"), unique("b-")
    ids = {dead_letter(db, a, b"{"), dead_letter(db, b, b"{"), dead_letter(db, None, b"{")}
    result = dlq(db, "list", "--json")
    assert result.returncode == 0, result.stderr
    assert ids <= {json.loads(line)["id"] for line in result.stdout.splitlines()}


def test_operator_replays_every_tenants_dead_letters_as_the_writer(db: Db) -> None:
    a, b = unique("a-"), unique("b-")
    ids = [dead_letter(db, a, telem(1.5)), dead_letter(db, b, telem(2.5))]
    result = dlq(db, "replay", *(arg for i in ids for arg in ("--id", str(i))))
    assert result.returncode == 0, result.stderr
    assert count(db.admin, "ts_measure", a) == 1
    assert count(db.admin, "ts_measure", b) == 1
    assert query(db.admin, "SELECT id FROM ingest_errors WHERE id = ANY(%s)", (ids,)) == []


def test_operator_purges_every_tenants_dead_letters(db: Db) -> None:
    ids = [dead_letter(db, unique("a-"), b"{"), dead_letter(db, unique("b-"), b"{"), dead_letter(db, None, b"{")]
    result = dlq(db, "purge", *(arg for i in ids for arg in ("--id", str(i))))
    assert result.returncode == 0, result.stderr
    assert query(db.admin, "SELECT id FROM ingest_errors WHERE id = ANY(%s)", (ids,)) == []


@pytest.mark.parametrize("statement", [
    "INSERT INTO ts_measure (tenant_id, device_id, point_id, ts, v_num) VALUES (%(t)s, 'd', 'p', now(), 1)",
    "INSERT INTO device_event (tenant_id, device_id, ts, type) VALUES (%(t)s, 'd', now(), 'x')",
    "INSERT INTO cmd_ack (tenant_id, device_id, cmd_id, ok) VALUES (%(t)s, 'd', 'c', true)",
    "SELECT count(*) FROM ts_measure",
    "UPDATE ingest_errors SET id = id WHERE tenant_id = %(t)s",
    "INSERT INTO ingest_errors (tenant_id, topic, payload, reason) VALUES (%(t)s, 't', '', 'invalid_json')",
    "CREATE TABLE intruder (x int)",
    "SET ROLE traksense_owner",
])
def test_operator_writes_nothing_outside_the_dlq_but_as_the_writer(db: Db, statement: str) -> None:
    tenant = unique("a-")
    dead_letter(db, tenant, b"{")
    with connect(OPERATOR, db, tenant) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(statement.encode(), {"t": tenant})


# --- a real worker on the restricted login -----------------------------------------------------


def test_a_worker_logged_in_as_the_worker_role_stores_a_message(db: Db, tmp_path: Path) -> None:
    index = fresh_redis_db()
    prefix, tenant = unique("ts"), unique("acme-")
    env = service_env(db.login(WORKER), index, prefix)
    worker = start_worker(env, tmp_path)
    listener = start_listener(env, tmp_path)
    try:
        with publisher() as device:
            device.publish(f"{prefix}/{tenant}/s1/d1/telem", telem(21.5))
        assert wait_until(lambda: count(db.admin, "ts_measure", tenant) == 1 or None, timeout=60)
    finally:
        listener.stop()
        worker.stop()
        redis.Redis(host=REDIS_HOST, port=6379, db=index).flushdb()
    assert "permission denied" not in worker.log()

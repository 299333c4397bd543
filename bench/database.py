"""The benchmark's own databases: created by the project's migrations, counted, measured, dropped.

Reads as the operator (a superuser, whom row-level security does not filter). A backend is a
PostgreSQL server: `postgres` the machine's (BENCH_PG_ADMIN_URL), `timescaledb` the cluster of
scripts/timescaledb.sh, which preloads TimescaleDB (or BENCH_TIMESCALEDB_ADMIN_URL). Both run
with the same durability: every bench database commits with `synchronous_commit = on`, though
the TimescaleDB test cluster's own default is off.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from bench.workload import FIRST_POINT
from migrations.runner import apply_pending

PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TIMESCALEDB_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "timescaledb.sh"
PERCENTILES = (0.5, 0.95, 0.99)

LATENCY_SQL = """
SELECT count(*), percentile_cont(%s::float8[]) WITHIN GROUP (ORDER BY lat), max(lat)
FROM (SELECT extract(epoch FROM ingested_at - ts)::float8 AS lat
      FROM ts_measure WHERE point_id = %s) l
"""
# Per second of commit time: messages stored (one p0 row each, plus dead letters) and latency.
TIMELINE_SQL = """
WITH m AS (
    SELECT floor(extract(epoch FROM ingested_at))::bigint AS s,
           extract(epoch FROM ingested_at - ts)::float8 AS lat
    FROM ts_measure WHERE point_id = %s
), d AS (
    SELECT floor(extract(epoch FROM ts))::bigint AS s, count(*) AS n FROM ingest_errors GROUP BY 1
), agg AS (
    SELECT s, count(*) AS n, percentile_cont(%s::float8[]) WITHIN GROUP (ORDER BY lat) AS p
    FROM m GROUP BY s
)
SELECT coalesce(agg.s, d.s), coalesce(agg.n, 0) + coalesce(d.n, 0), agg.p
FROM agg FULL JOIN d ON agg.s = d.s ORDER BY 1
"""


def admin_url(backend: str) -> str:
    """A superuser URL of `backend`'s server; starts the TimescaleDB cluster when needed."""
    if backend == "postgres":
        return PG_ADMIN
    if backend != "timescaledb":
        raise ValueError(f"unknown backend {backend!r}")
    if url := os.environ.get("BENCH_TIMESCALEDB_ADMIN_URL"):
        return url
    done = subprocess.run([str(TIMESCALEDB_SCRIPT), "start"], capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"no TimescaleDB server: {done.stderr.strip() or done.stdout.strip()}")
    return lines[-1]


def url_for(name: str, admin: str) -> str:
    return urlsplit(admin)._replace(path=f"/{name}").geturl()


def create(name: str, admin: str) -> str:
    url = url_for(name, admin)
    apply_pending(url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = on").format(sql.Identifier(name)))
    return url


def drop(name: str, admin: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass(frozen=True)
class Counts:
    rows: int
    dead: int


@dataclass(frozen=True)
class Latency:
    messages: int
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    max_s: float | None


@dataclass(frozen=True)
class Second:
    """One second of commit time."""

    at: float  # unix seconds
    messages: int
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None


class Probe:
    """One held connection for polling counts, so polling costs no connection setup."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.backend_pid = int(self.conn.info.backend_pid)

    def counts(self) -> Counts:
        row = self.conn.execute(
            "SELECT (SELECT count(*) FROM ts_measure), (SELECT count(*) FROM ingest_errors)"
        ).fetchone()
        assert row is not None
        return Counts(int(row[0]), int(row[1]))

    def commit_window(self) -> tuple[float | None, float | None]:
        """When the first and the last of the run's rows were committed (unix seconds)."""
        row = self.conn.execute(
            "SELECT extract(epoch FROM least((SELECT min(ingested_at) FROM ts_measure),"
            " (SELECT min(ts) FROM ingest_errors)))::float8,"
            " extract(epoch FROM greatest((SELECT max(ingested_at) FROM ts_measure),"
            " (SELECT max(ts) FROM ingest_errors)))::float8"
        ).fetchone()
        assert row is not None
        return (None if row[0] is None else float(row[0]), None if row[1] is None else float(row[1]))

    def latency(self) -> Latency:
        row = self.conn.execute(LATENCY_SQL, (list(PERCENTILES), FIRST_POINT)).fetchone()
        assert row is not None
        p = row[1] or [None, None, None]
        return Latency(int(row[0]), p[0], p[1], p[2], row[2])

    def timeline(self) -> list[Second]:
        rows = self.conn.execute(TIMELINE_SQL, (FIRST_POINT, list(PERCENTILES))).fetchall()
        return [Second(float(s), int(n), *(p or (None, None, None))) for s, n, p in rows]

    def server(self) -> dict[str, str | None]:
        """The server's version, and TimescaleDB's if the run's database has the extension."""
        row = self.conn.execute(
            "SELECT current_setting('server_version'),"
            " (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb')"
        ).fetchone()
        assert row is not None
        return {"postgresql": str(row[0]), "timescaledb": None if row[1] is None else str(row[1])}

    def backends(self, database: str) -> list[int]:
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> %s", (database, self.backend_pid)
        ).fetchall()
        return [int(r[0]) for r in rows]

    def close(self) -> None:
        self.conn.close()

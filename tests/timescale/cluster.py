"""TimescaleDB for the tests: the test-owned cluster scripts/timescaledb.sh provides, and fresh
databases on it made by the project's own migrations.

When TimescaleDB cannot be had, `admin_url` fails the test with the script's own line: these
tests never skip.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache

import psycopg
import pytest
from psycopg import sql

from migrations.runner import apply_pending, discover
from tests.support import ROOT, unique

SCRIPT = ROOT / "scripts" / "timescaledb.sh"
SCRIPT_TIMEOUT_S = 900  # a first build on a busy 2-core machine takes a few minutes


@cache
def _start() -> tuple[str | None, str]:
    """(the admin DSN, or None; the script's last line of complaint), once per test process."""
    done = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S, check=False)
    if done.returncode == 0 and done.stdout.strip():
        return done.stdout.strip().splitlines()[-1], ""
    lines = done.stderr.strip().splitlines() or [f"{SCRIPT.name} exited with {done.returncode} and said nothing"]
    return None, lines[-1]


def admin_url() -> str:
    """The superuser DSN of the TimescaleDB cluster; fails the calling test when there is none."""
    url, complaint = _start()
    if url is None:
        pytest.fail(f"TimescaleDB is not available, so the TimescaleDB tests cannot run: {complaint}",
                    pytrace=False)
    return url


def hypertables(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables").fetchall()
    return {str(r[0]) for r in rows}


@contextmanager
def fresh_timescale_database(
    prefix: str = "traksense_tsdb_", stages: Mapping[int, Callable[[str], None]] | None = None,
) -> Iterator[str]:
    """A new database on the TimescaleDB cluster made by the project's migrations, dropped afterwards.

    `stages` maps a migration number to a step run on the database just before that migration is
    applied: a database that lived through the migrations with data in it.
    """
    admin = admin_url()
    name = unique(prefix)
    url = admin.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrations = discover()
        for version, step in sorted((stages or {}).items()):
            apply_pending(url, [m for m in migrations if m.version < version])
            step(url)
        apply_pending(url, migrations)
        assert {"ts_reading", "ts_point"} <= hypertables(url), f"not hypertables in {name}"
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

"""scripts/timescaledb.sh: the DSN of a cluster that preloads TimescaleDB, or one line saying why not."""

from __future__ import annotations

import os
import subprocess

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.support import PG_ADMIN
from tests.timescale.cluster import SCRIPT, admin_url

pytestmark = pytest.mark.integration


def test_the_dsn_leads_to_a_cluster_that_preloads_timescaledb_without_telemetry() -> None:
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        settings = [conn.execute(f"SHOW {name}").fetchone() for name in
                    ("shared_preload_libraries", "timescaledb.telemetry_level", "listen_addresses")]
        available = conn.execute("SELECT default_version FROM pg_available_extensions "
                                 "WHERE name = 'timescaledb'").fetchone()
    assert settings == [("timescaledb",), ("off",), ("127.0.0.1",)]
    assert available == ("2.28.3",)


def test_a_port_another_server_holds_is_refused_in_one_line_naming_the_setting() -> None:
    taken = str(conninfo_to_dict(PG_ADMIN).get("port", 5432))  # the shared PostgreSQL's
    done = subprocess.run([str(SCRIPT)], env={**os.environ, "TIMESCALEDB_TEST_PORT": taken},
                          capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"timescaledb: port {taken} is taken by another server")
    assert "TIMESCALEDB_TEST_PORT" in done.stderr

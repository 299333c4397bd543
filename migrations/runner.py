"""Forward-only schema migrations: numbered SQL files applied in order, each once.

Creates the database named in the DSN when it does not exist, takes an advisory lock so two
runners never apply the same file, applies each pending `NNNN_name.sql` in its own transaction
and records it in `schema_migrations`. Running it again applies nothing.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ingest_tasks.postgres import with_keepalives

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent
FILE_PATTERN = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
LOCK_KEY = 7_361_204_119  # any constant: serializes concurrent runners on one database
RECORD_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in directory.glob("*.sql"):
        match = FILE_PATTERN.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), path.stem, path))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migration files share a number: {versions}")
    return found


def ensure_database(dsn: str) -> bool:
    """Create the DSN's database if missing; True when it was created."""
    name = conninfo_to_dict(dsn).get("dbname") or "postgres"
    with psycopg.connect(with_keepalives(make_conninfo(dsn, dbname="postgres")), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(name))))
        except psycopg.errors.DuplicateDatabase:
            return False
    log.info("created database %s", name)
    return True


def apply_pending(dsn: str, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply every migration not yet recorded; returns those applied now."""
    ensure_database(dsn)
    pending_all = discover() if migrations is None else migrations
    applied = []
    # Keepalives, but no statement timeout: building an index on a large table may take long.
    with psycopg.connect(with_keepalives(dsn), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        conn.execute(RECORD_TABLE)
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for migration in pending_all:
            if migration.version in done:
                continue
            with conn.transaction():
                conn.execute(migration.path.read_text(encoding="utf-8").encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            log.info("applied migration %s", migration.name)
            applied.append(migration)
    return applied

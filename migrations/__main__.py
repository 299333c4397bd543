"""`python -m migrations`: create the database if needed and apply every pending migration."""

from __future__ import annotations

import logging
import sys

import psycopg

from ingest_tasks.logs import configure_logging
from ingest_tasks.settings import load_settings
from migrations.runner import apply_pending

log = logging.getLogger("migrations")


def main() -> int:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        applied = apply_pending(settings.database_url)
    except psycopg.OperationalError as exc:
        print(f"migrations: cannot reach the database (DATABASE_URL): {str(exc).strip()}", file=sys.stderr)
        return 1
    log.info("schema up to date (%d migration(s) applied now)", len(applied))
    return 0


if __name__ == "__main__":
    sys.exit(main())

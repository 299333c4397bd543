"""`python -m ingest_tasks.dlq list | show ID | replay | purge`."""

import sys

from ingest_tasks.dlq.cli import main

sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
raise SystemExit(main())

"""The listener needs from the worker's package only what both sides share (wire format, ledger
layout, Celery app configuration, settings, logging): never the tasks, the payload models, the
pipeline, the database code or the workers' metrics. Checked in a fresh interpreter, as
`python -m listener` starts, after building every step."""

from __future__ import annotations

import subprocess
import sys

WORKER_ONLY = ("ingest_tasks.tasks", "ingest_tasks.models", "ingest_tasks.pipeline", "ingest_tasks.store",
               "ingest_tasks.adapters", "ingest_tasks.metrics", "psycopg")

BUILD_AND_LIST_MODULES = """
import sys
from ingest_tasks.settings import load_settings
from listener.__main__ import build
build(load_settings())
print("\\n".join(sorted(sys.modules)))
"""


def test_building_the_listener_loads_none_of_the_workers_code() -> None:
    done = subprocess.run([sys.executable, "-c", BUILD_AND_LIST_MODULES], capture_output=True, text=True,
                          timeout=60, check=True)
    loaded = set(done.stdout.split())
    assert "listener.service" in loaded
    assert [m for m in loaded if m.startswith(WORKER_ONLY)] == []

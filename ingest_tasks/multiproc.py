"""prometheus-client's multiprocess mode for a worker: its directory, set before prometheus-client is imported.

It has to run first (`ingest_tasks.__init__` calls it before loading the tasks), so it imports
nothing from prometheus-client; the metrics and their endpoint are `ingest_tasks.metrics`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Sequence

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
TEMP_PREFIX = "ingest-worker-metrics-"


def prepare_multiprocess(argv: Sequence[str]) -> None:
    """In a `celery ... worker` process, point prometheus-client at a fresh, empty directory.

    Fresh at every start, since files left by a previous run would add up. Beat and Flower are
    left alone: Flower has metrics of its own that multiprocess mode would break.
    """
    if "worker" not in argv[1:]:
        return
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)
    else:
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix=TEMP_PREFIX)
    # Celery's CLI loads Flower's command plugin, which imports prometheus-client before our app
    # is found: make the value class it chose at import follow the directory we just set.
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]


def remove_multiprocess_dir() -> None:
    """At worker shutdown, remove the directory if it is one this module made."""
    directory = os.environ.get(MULTIPROC_ENV, "")
    if os.path.basename(directory).startswith(TEMP_PREFIX):
        shutil.rmtree(directory, ignore_errors=True)

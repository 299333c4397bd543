"""The multiprocess-metrics directory of a worker, set before prometheus-client is imported."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


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
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="ingest-worker-metrics-")

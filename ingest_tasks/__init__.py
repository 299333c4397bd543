"""TrakSense ingest, the worker side. `celery -A ingest_tasks worker` finds the app here.

The app is built lazily so that the listener can import the wire format and the app factory
without loading the worker's settings, tasks and database code.
"""

from __future__ import annotations

import sys


def __getattr__(name: str) -> object:
    if name in ("app", "celery"):
        # Imported here, not at the top: the multiprocess-metrics directory must be set first,
        # and the listener imports this package without wanting the worker's modules.
        from ingest_tasks.multiproc import prepare_multiprocess  # noqa: PLC0415

        prepare_multiprocess(sys.argv)
        from ingest_tasks.tasks import app  # noqa: PLC0415

        return app
    raise AttributeError(name)

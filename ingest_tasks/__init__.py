"""TrakSense ingest, the worker side. `celery -A ingest_tasks worker` finds the app here.

The app is built lazily so that the listener can import the wire format and the app factory
without loading the worker's settings, tasks and database code.
"""

from __future__ import annotations

import sys


def __getattr__(name: str) -> object:
    if name in ("app", "celery"):
        from ingest_tasks.multiproc import prepare_multiprocess

        prepare_multiprocess(sys.argv)
        from ingest_tasks.tasks import app

        return app
    raise AttributeError(name)

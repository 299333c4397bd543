"""Serving the workers' metrics now lives in `ingest_tasks.metrics`; these names stay until tasks.py calls it there."""

from __future__ import annotations

from ingest_tasks.metrics import forget_process, serve

__all__ = ["forget_process", "serve"]

"""How often Python's cyclic garbage collector runs in our long-lived processes.

Why: a chunk builds thousands of small containers (parsed payloads, rows, outcomes) that live
until the chunk is stored. With the default threshold (700) the collector runs many times per
chunk, and each older-generation pass walks every object Celery or paho loaded at start. Freezing
what exists after start and collecting the young generation less often keeps the collector but
takes it off the hot path. Reference counting still frees the chunk's objects as soon as it is
done; only cycles wait longer.
"""

from __future__ import annotations

import gc

# Allocations (minus frees) of container objects between young-generation collections.
YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Call once a process has finished starting: move what start-up built out of the collector's sight."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)

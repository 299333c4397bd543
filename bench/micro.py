"""`python -m bench.micro`: CPU cost of the worker's pure stage, per message, on one core.

Runs `pipeline.process_chunk` over a chunk of 800 five-point v1 messages (the benchmark's
default shape), then over 800 fifty-point ones (more brackets than the nesting limit has levels,
so their depth is read rather than bounded by a count), and prints microseconds per message,
best of several rounds. CPU time (`time.process_time`), not wall time: on a shared machine other
processes' turns on the core would count otherwise. No services needed.
"""

from __future__ import annotations

import time

import orjson

from ingest_tasks.envelope import Chunk, Message
from ingest_tasks.pipeline import process_chunk

CHUNK = 800
ROUNDS = 7
REPEATS = 10


def payload(i: int, points: int = 5) -> bytes:
    values = [{"name": f"p{j}", "t": "float", "v": i * 0.1 + j, "u": "C"} for j in range(points)]
    ts = f"2025-10-07T15:30:{i % 60:02d}.{i % 1000:03d}Z"
    return orjson.dumps({"schema": "v1", "ts": ts, "points": values, "meta": {"fw": "1.2.3"}})


def main() -> None:
    for points in (5, 50):
        messages = tuple(
            Message(f"traksense/t{i % 10}/s/d{i % 1000}/telem", payload(i, points), time.time()) for i in range(CHUNK)
        )
        chunk = Chunk("micro", messages)
        process_chunk(chunk, 65_536)
        best = min(_round(chunk) for _ in range(ROUNDS))
        print(f"process_chunk, {points}-point messages: {best * 1e6 / CHUNK:.1f} us per message"
              f" (best of {ROUNDS} rounds of {REPEATS} chunks)")


def _round(chunk: Chunk) -> float:
    started = time.process_time()
    for _ in range(REPEATS):
        process_chunk(chunk, 65_536)
    return (time.process_time() - started) / REPEATS


if __name__ == "__main__":
    main()

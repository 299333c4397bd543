"""The workers' Prometheus metrics: what they count, and the one endpoint that serves them.

A worker is a main process and its prefork pool children; prometheus-client's multiprocess mode
adds up every child on one endpoint (`WORKER_METRICS_PORT`). That mode must be switched on before
prometheus-client is first imported, which `ingest_tasks.multiproc` does and this module cannot.
The listener's metrics are its own (`listener.metrics`).

Names follow `ingest_<thing>[_<unit>]`; labels come only from closed sets (`type`, `reason`, `table`).
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from datetime import datetime

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from ingest_tasks.multiproc import MULTIPROC_ENV

log = logging.getLogger(__name__)

# Buckets that resolve 10 ms to 60 s.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Contract metrics (`ingest_batch_size` is the listener's; `ingest_queue_size` is read at each scrape).
MESSAGES = Counter("ingest_messages", "Messages stored as rows, by kind", ["type"])
POINTS = Counter("ingest_points", "Measurement points stored")
ERRORS = Counter("ingest_errors", "Messages dead-lettered, by reason", ["reason"])
LATENCY = Histogram("ingest_latency_seconds", "Device timestamp to commit", buckets=LATENCY_BUCKETS)

ROWS = Counter("ingest_rows_written", "Rows written, by table", ["table"])
RETRIES = Counter("ingest_task_retries", "Chunk retries after a transient failure")
QUEUE_LATENCY = Histogram("ingest_queue_latency_seconds", "Listener receipt to commit", buckets=LATENCY_BUCKETS)
CHUNK_SECONDS = Histogram("ingest_chunk_duration_seconds", "Worker time to process and store a chunk",
                          buckets=LATENCY_BUCKETS)


def observe_many(histogram: Histogram, amounts: Iterable[float]) -> None:
    """`histogram.observe` for each amount, with one write per bucket instead of one per amount.

    In multiprocess mode every observation is a locked write to a memory-mapped file; a chunk
    has hundreds of them. This bins the amounts first, using the same `le` rule as `observe`.
    """
    bounds = histogram._upper_bounds  # the histogram's own bucket bounds, +Inf last
    counts = [0] * len(bounds)
    total = 0.0
    for amount in amounts:
        counts[bisect_left(bounds, amount)] += 1
        total += amount
    if not any(counts):
        return
    histogram._sum.inc(total)
    for bucket, n in zip(histogram._buckets, counts, strict=True):
        if n:
            bucket.inc(n)


def observe_latencies(device_ts: Iterable[datetime], received_at: Iterable[float], now: float) -> None:
    observe_many(LATENCY, (max(0.0, now - s) for s in _timestamps(device_ts)))
    observe_many(QUEUE_LATENCY, (max(0.0, now - received) for received in received_at))


def _timestamps(device_ts: Iterable[datetime]) -> Iterable[float]:
    for ts in device_ts:
        try:
            yield ts.timestamp()
        except (OverflowError, ValueError):  # a valid but extreme timestamp, e.g. year 1
            continue


class QueueSizeCollector(Collector):
    """`ingest_queue_size` read from Redis at each scrape, on a fresh connection."""

    def __init__(self, broker_url: str, queue: str) -> None:
        self._broker_url = broker_url
        self._queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("ingest_queue_size", "Chunks waiting in the broker queue")
        try:
            with redis.Redis.from_url(self._broker_url, socket_timeout=2, socket_connect_timeout=2) as client:
                gauge.add_metric([], float(client.llen(self._queue)))
        except redis.RedisError as exc:
            log.warning("metrics: cannot read the queue size from Redis: %s", exc)
            return
        yield gauge


def serve(port: int, broker_url: str, queue: str) -> None:
    """One endpoint for the worker's main process and all its pool children (0: none)."""
    if not port:
        return
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(QueueSizeCollector(broker_url, queue))
    start_http_server(port, registry=registry)
    log.info("worker metrics on :%d/metrics", port)


def forget_process(pid: int) -> None:
    """A pool child ended: its gauges leave the sum (counters keep what it counted)."""
    if os.environ.get(MULTIPROC_ENV):
        mark_process_dead(pid)

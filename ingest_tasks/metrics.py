"""Prometheus metrics of the listener and the workers, and how each process serves them.

Names follow `ingest_<thing>[_<unit>]`; labels come only from closed sets (`type`, `reason`,
`table`). The workers run prometheus-client in multiprocess mode so one endpoint on
`WORKER_METRICS_PORT` adds up every prefork child; the directory it needs is set up before
prometheus-client is imported (`ingest_tasks.worker_metrics.prepare_multiprocess`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram

# Buckets that resolve 10 ms to 60 s.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 200, 400, 800, 1600, 3200)

# Contract metrics.
MESSAGES = Counter("ingest_messages", "Messages stored as rows, by kind", ["type"])
POINTS = Counter("ingest_points", "Measurement points stored")
ERRORS = Counter("ingest_errors", "Messages dead-lettered, by reason", ["reason"])
BATCH_SIZE = Histogram("ingest_batch_size", "Messages per chunk sent by the listener", buckets=BATCH_BUCKETS)
LATENCY = Histogram("ingest_latency_seconds", "Device timestamp to commit", buckets=LATENCY_BUCKETS)
QUEUE_SIZE = Gauge("ingest_queue_size", "Chunks waiting in the broker queue", multiprocess_mode="max")

# Listener.
RECEIVED = Counter("ingest_listener_received", "MQTT messages received by the listener")
CHUNKS_ENQUEUED = Counter("ingest_chunks_enqueued", "Chunks accepted by Redis")
CHUNKS_RESENT = Counter("ingest_chunks_resent", "Chunks sent again after a worker lost them on the way")
BUFFERED = Gauge("ingest_listener_buffered_messages", "Messages received but not yet enqueued",
                 multiprocess_mode="max")
BUFFERED_BYTES = Gauge("ingest_listener_buffered_bytes", "Bytes (payload + topic) received but not yet enqueued",
                       multiprocess_mode="max")
REDIS_MEMORY = Gauge("ingest_redis_memory_bytes", "Redis memory in use (used_memory), as the listener last read it",
                     multiprocess_mode="max")
MQTT_CONNECTED = Gauge("ingest_mqtt_connected", "1 while the listener is connected to the MQTT broker",
                       multiprocess_mode="max")
ENQUEUE_FAILURES = Counter("ingest_enqueue_failures", "Failed attempts to put a chunk in Redis")
MQTT_SESSION_LOST = Counter("ingest_mqtt_session_lost",
                            "Connects that found the listener's MQTT session discarded (its queued messages lost)")
MQTT_DISCONNECTS = Counter("ingest_mqtt_disconnects",
                           "DISCONNECTs sent by the MQTT broker (MQTT 5), by reason (a closed set; else other)",
                           ["reason"])

# Workers.
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

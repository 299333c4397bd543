"""Serving the workers' metrics: one endpoint for the main process and all its pool children.

prometheus-client's multiprocess mode needs `PROMETHEUS_MULTIPROC_DIR` set before it is first
imported (`ingest_tasks.multiproc`) and told when a child dies.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from ingest_tasks.multiproc import MULTIPROC_ENV

log = logging.getLogger(__name__)


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
    if not port:
        return
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(QueueSizeCollector(broker_url, queue))
    start_http_server(port, registry=registry)
    log.info("worker metrics on :%d/metrics", port)


def forget_process(pid: int) -> None:
    if os.environ.get(MULTIPROC_ENV):
        mark_process_dead(pid)

"""The listener's Prometheus metrics, served on `METRICS_PORT` from the default registry.

One process, so no multiprocess mode (that is the workers' `ingest_tasks.metrics`). Names follow
`ingest_<thing>[_<unit>]`; the only label, a disconnect's reason, comes from a closed set.
Of the contract's metrics the listener exposes `ingest_batch_size` and `ingest_queue_size`; the
workers expose the others.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 200, 400, 800, 1600, 3200)

# Contract metrics.
BATCH_SIZE = Histogram("ingest_batch_size", "Messages per chunk sent by the listener", buckets=BATCH_BUCKETS)
QUEUE_SIZE = Gauge("ingest_queue_size", "Chunks waiting in the broker queue")

RECEIVED = Counter("ingest_listener_received", "MQTT messages received by the listener")
CHUNKS_ENQUEUED = Counter("ingest_chunks_enqueued", "Chunks accepted by Redis")
CHUNKS_RESENT = Counter("ingest_chunks_resent", "Chunks sent again after a worker lost them on the way")
STAGED = Counter("ingest_listener_staged",
                 "Messages made safe in Redis and acknowledged before their chunk went out (the broker waited)")
ENQUEUE_FAILURES = Counter("ingest_enqueue_failures", "Failed attempts to put a chunk in Redis")
BUFFERED = Gauge("ingest_listener_buffered_messages", "Messages received but not yet enqueued")
BUFFERED_BYTES = Gauge("ingest_listener_buffered_bytes", "Bytes (payload + topic) received but not yet enqueued")
REDIS_MEMORY = Gauge("ingest_redis_memory_bytes", "Redis memory in use (used_memory), as the listener last read it")
MQTT_CONNECTED = Gauge("ingest_mqtt_connected", "1 while the listener is connected to the MQTT broker")
MQTT_SESSION_LOST = Counter("ingest_mqtt_session_lost",
                            "Connects that found the listener's MQTT session discarded (its queued messages lost)")
MQTT_DISCONNECTS = Counter("ingest_mqtt_disconnects",
                           "DISCONNECTs sent by the MQTT broker (MQTT 5), by reason (a closed set; else other)",
                           ["reason"])

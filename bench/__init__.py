"""The end-to-end benchmark (`python -m bench`): real broker, listener, Redis, workers, PostgreSQL.

Owns the workload, the processes it starts for each compared design (ours, the bare MQTT ceiling,
the naive one-task-per-message design) and the figures it reports. Refuses to touch the service's
code: it drives `python -m listener` and `celery -A ingest_tasks worker` exactly as an operator does.
"""

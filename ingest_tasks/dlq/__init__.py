"""The dead-letter queue's operator tooling, `python -m ingest_tasks.dlq`: `cli` (what people type
and read) on top of `queries` (all of its SQL). The workers write dead letters in `store`.
"""

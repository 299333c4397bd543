"""Batched histogram observations give exactly the samples of one `observe` per amount."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from ingest_tasks.metrics import LATENCY_BUCKETS, observe_many


def samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    """{(suffix, le): value}, e.g. ("_bucket", "0.5"), ("_count", ""), ("_sum", "")."""
    return {(s.name[1:], s.labels.get("le", "")): s.value for m in histogram.collect() for s in m.samples
            if not s.name.endswith("_created")}


@pytest.mark.parametrize("amounts", [
    pytest.param([], id="none"),
    pytest.param([0.0, 0.01, 0.010001, 0.5, 60.0, 60.5, 1e9], id="on and around bounds"),
    pytest.param([0.003 * i for i in range(1000)], id="many"),
])
def test_observe_many_equals_observe_each(amounts: list[float]) -> None:
    one, many = (Histogram(name, "h", buckets=LATENCY_BUCKETS, registry=CollectorRegistry()) for name in "ab")
    for amount in amounts:
        one.observe(amount)
    observe_many(many, amounts)
    assert samples(one) == samples(many)
    assert samples(many)[("_count", "")] == len(amounts)

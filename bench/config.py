"""The benchmark's knobs: every option declared once, with its default and help."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from typing import Literal

Mode = Literal["live", "backlog"]
DESIGNS = ("ours", "ceiling", "naive")
BACKENDS = ("postgres", "timescaledb")

DEFAULT_MESSAGES = 200_000
DEFAULT_NAIVE_MESSAGES = 20_000  # one task per message is ~100x slower: a smaller run, same rates
QUICK_MESSAGES = 3_000
QUICK_NAIVE_MESSAGES = 1_000
DEFAULT_STALL_S = 60.0  # give up when nothing lands for this long


@dataclass(frozen=True)
class BenchConfig:
    messages: int
    points: int
    devices: int
    tenants: int
    invalid: float
    rate: float
    publishers: int
    window: int
    batch_size: int | None
    batch_ms: int | None
    concurrency: int
    mode: Mode
    designs: tuple[str, ...]
    backends: tuple[str, ...]
    listeners: int
    worker_nodes: int
    naive_messages: int
    stall_s: float
    out_dir: str
    keep: bool
    quick: bool


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--messages", type=int, default=DEFAULT_MESSAGES, help="messages to publish")
    p.add_argument("--points", type=int, default=5, help="points per telemetry message")
    p.add_argument("--devices", type=int, default=1000, help="distinct devices")
    p.add_argument("--tenants", type=int, default=10, help="distinct tenants (device %% tenants)")
    p.add_argument("--invalid", type=float, default=0.01, help="fraction of invalid messages (-> DLQ)")
    p.add_argument(
        "--rate", type=float, default=0.0, help="messages/s over all publishers; 0 = as fast as possible"
    )
    p.add_argument("--publishers", type=int, default=2, help="publisher processes")
    p.add_argument("--window", type=int, default=1000, help="unacknowledged QoS 1 publishes per publisher")
    p.add_argument("--batch-size", type=int, default=None, help="INGEST_BATCH_SIZE (default: the service's)")
    p.add_argument("--batch-ms", type=int, default=None, help="INGEST_BATCH_MS (default: the service's)")
    p.add_argument("--concurrency", type=int, default=2, help="worker pool processes per worker node")
    p.add_argument(
        "--mode",
        choices=("live", "backlog"),
        default="live",
        help="live: publish while the pipeline runs; backlog: drain a session queue",
    )
    p.add_argument(
        "--designs", default="ours,ceiling,naive", help="comma separated, from " + ",".join(DESIGNS)
    )
    p.add_argument(
        "--backends",
        default="postgres",
        help="comma separated, from " + ",".join(BACKENDS) + "; each design that writes runs on each "
        "(timescaledb: the cluster of scripts/timescaledb.sh, or BENCH_TIMESCALEDB_ADMIN_URL)",
    )
    p.add_argument(
        "--listeners", type=int, choices=(1, 2), default=1, help="listeners (2: MQTT_SHARED_GROUP)"
    )
    p.add_argument("--worker-nodes", type=int, choices=(1, 2), default=1, help="celery worker nodes")
    p.add_argument(
        "--naive-messages",
        type=int,
        default=DEFAULT_NAIVE_MESSAGES,
        help="messages for the naive design (capped at --messages)",
    )
    p.add_argument(
        "--stall", type=float, default=DEFAULT_STALL_S, help="seconds without progress before giving up"
    )
    p.add_argument("--out", default="bench-results", help="directory for the JSON, PNG and logs")
    p.add_argument("--keep", action="store_true", help="keep the databases (and logs) after the run")
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_MESSAGES} messages")
    return p


def parse_config(argv: list[str] | None = None) -> BenchConfig:
    parser = build_parser()
    a = parser.parse_args(argv)
    designs = tuple(d.strip() for d in a.designs.split(",") if d.strip())
    unknown = [d for d in designs if d not in DESIGNS]
    if unknown or not designs:
        parser.error(f"--designs: unknown {unknown}; choose from {','.join(DESIGNS)}")
    backends = tuple(dict.fromkeys(b.strip() for b in a.backends.split(",") if b.strip()))
    if not backends or any(b not in BACKENDS for b in backends):
        parser.error(f"--backends: choose from {','.join(BACKENDS)}")
    if not 0 <= a.invalid < 1 or min(a.messages, a.points, a.devices, a.tenants, a.publishers) < 1:
        parser.error("--invalid must be in [0, 1); counts must be >= 1")
    config = BenchConfig(
        messages=a.messages,
        points=a.points,
        devices=a.devices,
        tenants=a.tenants,
        invalid=a.invalid,
        rate=a.rate,
        publishers=a.publishers,
        window=a.window,
        batch_size=a.batch_size,
        batch_ms=a.batch_ms,
        concurrency=a.concurrency,
        mode=a.mode,
        designs=designs,
        backends=backends,
        listeners=a.listeners,
        worker_nodes=a.worker_nodes,
        naive_messages=min(a.naive_messages, a.messages),
        stall_s=a.stall,
        out_dir=a.out,
        keep=a.keep,
        quick=a.quick,
    )
    if a.quick:
        config = replace(
            config,
            messages=min(a.messages, QUICK_MESSAGES),
            naive_messages=min(a.naive_messages, QUICK_NAIVE_MESSAGES),
            devices=min(a.devices, 200),
        )
    return config

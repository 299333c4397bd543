"""`python -m bench`: run each chosen design through the same workload and report side by side."""

from __future__ import annotations

import logging
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis

from bench import database, designs, plot, report, runner, workload
from bench.config import BenchConfig, parse_config
from bench.progress import Stalled
from bench.services import start_mosquitto

REDIS_URL = "redis://127.0.0.1:6379"
CLAIM_KEY = "bench:claimed-by"  # makes the index non-empty, so another run does not pick it


def claim_redis_index(run_id: str) -> int:
    """An empty Redis database index, marked as ours (tests pick theirs at random from 1-15)."""
    for index in range(15, 0, -1):
        client = redis.Redis.from_url(f"{REDIS_URL}/{index}")
        if client.dbsize() == 0 and client.set(CLAIM_KEY, run_id, nx=True):
            return index
    raise RuntimeError("no empty Redis database index (1-15) to run in")


def runs(config: BenchConfig) -> list[tuple[str, str, str]]:
    """(result key, design, backend) in run order; the ceiling writes nothing and runs once."""
    out = []
    for backend in config.backends:
        for name in config.designs:
            if name == "ceiling" and backend != config.backends[0]:
                continue
            key = name if len(config.backends) == 1 or name == "ceiling" else f"{name}@{backend}"
            out.append((key, name, backend))
    return out


def run_design(
    key: str, name: str, backend: str, config: BenchConfig, *, run_id: str, log_dir: Path, redis_url: str,
    redis_pid: int,
) -> dict[str, Any]:
    messages = config.naive_messages if name == "naive" else config.messages
    expected = workload.expected(messages, config.points, config.invalid)
    admin = database.admin_url(backend) if name != "ceiling" else ""
    mosquitto, port = start_mosquitto(log_dir, f"{key.replace('@', '-')}-mosquitto")
    ctx = designs.RunContext(
        run_id,
        log_dir,
        redis_url,
        port,
        config.concurrency,
        config.listeners,
        config.worker_nodes,
        config.batch_size,
        config.batch_ms,
        config.keep,
        backend,
        admin,
    )
    design: designs.Design | None = None
    try:
        design = designs.DESIGN_CLASSES[name](ctx, expected)
        print(
            f"{key}: {messages:,} messages -> {design.target():,} {design.unit} expected ({config.mode})",
            flush=True,
        )
        outcome = runner.run(
            design,
            config,
            messages,
            port=port,
            run_id=run_id,
            mosquitto_pid=mosquitto.pid,
            redis_pid=redis_pid,
        )
        figures = report.figures(outcome, expected, config.points)
        if isinstance(design, designs.DatabaseDesign):
            figures["backend"] = {"name": backend, **design.probe.server()}
        return figures
    finally:
        if design is not None:
            design.close()
        mosquitto.stop()
        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        client.set(CLAIM_KEY, run_id)


def run_all(config: BenchConfig, argv: list[str]) -> int:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    run_id = f"{stamp.lower().replace('t', '')}{uuid.uuid4().hex[:4]}"
    out = Path(config.out_dir)
    log_dir = out / f"{stamp}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    index = claim_redis_index(run_id)
    redis_url = f"{REDIS_URL}/{index}"
    redis_pid = int(redis.Redis.from_url(redis_url).info("server")["process_id"])
    results: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    try:
        for key, name, backend in runs(config):
            try:
                results[key] = run_design(
                    key, name, backend, config, run_id=run_id, log_dir=log_dir, redis_url=redis_url,
                    redis_pid=redis_pid,
                )
            except (Stalled, RuntimeError, OSError) as exc:
                errors[key] = str(exc)
                print(f"{key}: FAILED: {exc}", flush=True)
    finally:
        redis.Redis.from_url(redis_url).flushdb()
    doc = report.document(config, argv, stamp, results, errors)
    json_path = out / f"{stamp}.json"
    json_path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    png_path = out / f"{stamp}.png"
    plot.draw(doc, png_path)
    print(report.summary(doc))
    print(f"wrote {json_path} and {png_path}")
    exact = not errors and all(d["exact"] for d in results.values())
    if exact and not config.keep:
        shutil.rmtree(log_dir, ignore_errors=True)
    else:
        print(f"logs kept in {log_dir}")
    return 0 if exact else 1


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    args = sys.argv[1:] if argv is None else argv
    return run_all(parse_config(args), args)


if __name__ == "__main__":
    sys.exit(main())

"""One design through one run: start it, drive it, wait for every row, collect the figures."""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass, field

from bench import procstats, publisher
from bench.config import BenchConfig
from bench.database import Latency, Second
from bench.designs import SPAWN, Ceiling, DatabaseDesign, Design
from bench.progress import Sample, watch
from bench.publisher import PublisherJob, PublisherReport

PUBLISH_TIMEOUT_S = 3600.0
CONNECT_TIMEOUT_S = 60.0


@dataclass
class Outcome:
    """What one design did, before it is turned into figures."""

    name: str
    unit: str
    started: float
    finished: float
    samples: list[Sample]
    publishers: list[PublisherReport]
    usage: list[procstats.Usage]
    rows: int = 0
    dead: int = 0
    first_commit: float | None = None
    latency: Latency | None = None
    timeline: list[Second] = field(default_factory=list)


class Fleet:
    """The publisher processes of one design: connected first, released together by `go`."""

    def __init__(self, config: BenchConfig, messages: int, port: int, run_id: str) -> None:
        self.go = SPAWN.Event()
        self.connected = SPAWN.Semaphore(0)
        self.reports: multiprocessing.Queue[PublisherReport] = SPAWN.Queue()
        self.processes = []
        for index in range(config.publishers):
            job = PublisherJob(
                index,
                config.publishers,
                "127.0.0.1",
                port,
                messages,
                config.points,
                config.devices,
                config.tenants,
                config.invalid,
                config.rate / config.publishers,
                config.window,
                f"bench-{run_id}-pub-{index}",
            )
            proc = SPAWN.Process(
                target=publisher.run,
                name=f"publisher-{index}",
                args=(job, self.connected, self.go, self.reports),
            )
            proc.start()
            self.processes.append(proc)

    def wait_connected(self) -> None:
        """Block until every publisher holds its MQTT connection, so none starts late."""
        for _ in self.processes:
            if not self.connected.acquire(timeout=CONNECT_TIMEOUT_S):
                raise RuntimeError(f"a publisher did not connect within {CONNECT_TIMEOUT_S:.0f} s")

    def collect(self) -> list[PublisherReport]:
        reports = [self.reports.get(timeout=PUBLISH_TIMEOUT_S) for _ in self.processes]
        for proc in self.processes:
            proc.join(10)
        return sorted(reports, key=lambda r: r.index)

    def kill(self) -> None:
        for proc in self.processes:
            if proc.is_alive():
                proc.kill()


def fixed_roles(design: Design, mosquitto_pid: int, redis_pid: int) -> procstats.Roles:
    return {mosquitto_pid: "mosquitto", redis_pid: "redis"} | design.roles()


def run(
    design: Design,
    config: BenchConfig,
    messages: int,
    *,
    port: int,
    run_id: str,
    mosquitto_pid: int,
    redis_pid: int,
) -> Outcome:
    design.start_backend()
    if config.mode == "backlog":
        design.start_subscribers()  # creates the persistent session and its subscription
        design.stop_subscribers()
        fleet = Fleet(config, messages, port, run_id)
        fleet.wait_connected()
        print(f"  {design.name}: publishing {messages:,} messages into the session queue ...", flush=True)
        fleet.go.set()
        reports = fleet.collect()
        roles = fixed_roles(design, mosquitto_pid, redis_pid)
        start = procstats.snapshot(roles)
        started = time.time()
        design.start_subscribers()
    else:
        design.start_subscribers()
        fleet = Fleet(config, messages, port, run_id)
        fleet.wait_connected()
        roles = fixed_roles(design, mosquitto_pid, redis_pid)
        start = procstats.snapshot(roles)
        started = time.time()
        fleet.go.set()
    try:
        samples = watch(
            design.name, design.unit, design.landed, design.target(), stall_s=config.stall_s, started=started
        )
    except BaseException:
        fleet.kill()
        raise
    roles |= fixed_roles(design, mosquitto_pid, redis_pid)
    end = procstats.snapshot(roles)
    if config.mode == "live":
        reports = fleet.collect()
    outcome = Outcome(
        design.name,
        design.unit,
        started,
        samples[-1].at,
        samples,
        reports,
        procstats.usages(roles, start, end),
    )
    finish(design, outcome)
    return outcome


def finish(design: Design, outcome: Outcome) -> None:
    """Exact counts, commit times and latency from where the design put its results."""
    if isinstance(design, DatabaseDesign):
        counts = design.probe.counts()
        outcome.rows, outcome.dead = counts.rows, counts.dead
        first, last = design.probe.commit_window()
        outcome.first_commit = first
        outcome.finished = last or outcome.finished
        outcome.latency = design.probe.latency()
        outcome.timeline = design.probe.timeline()
    elif isinstance(design, Ceiling):
        design.stop_subscribers()
        if design.report is not None:
            outcome.rows = design.report.received
            outcome.first_commit = design.report.first
            outcome.finished = design.report.last or outcome.finished

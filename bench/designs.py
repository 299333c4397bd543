"""The three compared designs, each behind the same small interface the runner drives.

`ours` is the service as an operator runs it; `naive` is the one-task-per-message design of
bench.naive; `ceiling` is a subscriber that only counts. Each design gets its own database
(when it writes one), its own Mosquitto and the run's Redis index, emptied between designs.
"""

from __future__ import annotations

import multiprocessing
from abc import ABC, abstractmethod
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from pathlib import Path

from bench import ceiling, database
from bench.procstats import Roles, children, pids_named
from bench.services import VENV_BIN, Service
from bench.workload import Expected

SESSION_EXPIRY_S = 3600  # long enough to hold a backlog while the subscriber is away
SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class RunContext:
    run_id: str
    log_dir: Path
    redis_url: str
    mqtt_port: int
    concurrency: int
    listeners: int
    worker_nodes: int
    batch_size: int | None
    batch_ms: int | None
    keep: bool
    backend: str
    pg_admin_url: str


class Design(ABC):
    name: str
    unit = "rows"

    def __init__(self, ctx: RunContext, expected: Expected) -> None:
        self.ctx = ctx
        self.expected = expected

    def target(self) -> int:
        return self.expected.total_rows

    @abstractmethod
    def start_backend(self) -> None: ...

    @abstractmethod
    def start_subscribers(self) -> None: ...

    @abstractmethod
    def stop_subscribers(self) -> None: ...

    @abstractmethod
    def landed(self) -> int: ...

    @abstractmethod
    def roles(self) -> Roles: ...

    @abstractmethod
    def close(self) -> None: ...


class DatabaseDesign(Design):
    """A design that ends in PostgreSQL: its own migrated database, processes started by argv."""

    def __init__(self, ctx: RunContext, expected: Expected) -> None:
        super().__init__(ctx, expected)
        self.db_name = f"bench_{ctx.run_id}_{self.name}"
        self.db_url = database.create(self.db_name, ctx.pg_admin_url)
        self.probe = database.Probe(self.db_url)
        self.workers: list[Service] = []
        self.listeners: list[Service] = []

    @abstractmethod
    def env(self) -> dict[str, str]: ...

    @abstractmethod
    def worker_argv(self, node: int) -> list[str]: ...

    @abstractmethod
    def listener_argv(self) -> list[str]: ...

    def start_backend(self) -> None:
        for node in range(1, self.ctx.worker_nodes + 1):
            name = f"{self.name}-worker-{node}"
            worker = Service(name, self.worker_argv(node), self.env(), self.ctx.log_dir)
            self.workers.append(worker)
            worker.wait_for_log("ready.")

    def start_subscribers(self) -> None:
        self.listeners = []
        for n in range(1, self.listener_count() + 1):
            env = {**self.env(), "MQTT_CLIENT_ID": f"bench-{self.ctx.run_id}-{self.name}-{n}"}
            listener = Service(f"{self.name}-listener-{n}", self.listener_argv(), env, self.ctx.log_dir)
            self.listeners.append(listener)
            listener.wait_for_log("mqtt subscribed")

    def listener_count(self) -> int:
        return self.ctx.listeners

    def stop_subscribers(self) -> None:
        for listener in self.listeners:
            listener.stop()

    def landed(self) -> int:
        counts = self.probe.counts()
        return counts.rows + counts.dead

    def roles(self) -> Roles:
        roles: Roles = {}
        for n, listener in enumerate(self.listeners, 1):
            roles[listener.pid] = f"listener-{n}"
        for n, worker in enumerate(self.workers, 1):
            roles[worker.pid] = f"worker-{n}"
            roles.update({pid: f"worker-{n}/child" for pid in children(worker.pid)})
        return roles | self.postgres_roles()

    def postgres_roles(self) -> Roles:
        ours = set(self.probe.backends(self.db_name))
        background = {
            int(r[0])
            for r in self.probe.conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE backend_type <> 'client backend'"
            ).fetchall()
        }
        return {
            pid: "postgres-backend" if pid in ours else "postgres-background"
            for pid in pids_named("postgres")
            if pid in ours or pid in background
        }

    def close(self) -> None:
        self.stop_subscribers()
        for worker in self.workers:
            worker.stop()
        self.probe.close()
        if not self.ctx.keep:
            database.drop(self.db_name, self.ctx.pg_admin_url)

    def base_env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.db_url,
            "CELERY_BROKER_URL": self.ctx.redis_url,
            "MQTT_URL": f"mqtt://127.0.0.1:{self.ctx.mqtt_port}",
            "MQTT_SESSION_EXPIRY": str(SESSION_EXPIRY_S),
        }


class Ours(DatabaseDesign):
    name = "ours"

    def env(self) -> dict[str, str]:
        env = self.base_env() | {"METRICS_PORT": "0", "WORKER_METRICS_PORT": "0", "LOG_LEVEL": "INFO"}
        if self.ctx.listeners > 1:
            env["MQTT_SHARED_GROUP"] = f"bench{self.ctx.run_id}"
        if self.ctx.batch_size is not None:
            env["INGEST_BATCH_SIZE"] = str(self.ctx.batch_size)
        if self.ctx.batch_ms is not None:
            env["INGEST_BATCH_MS"] = str(self.ctx.batch_ms)
        return env

    def worker_argv(self, node: int) -> list[str]:
        return [
            str(VENV_BIN / "celery"),
            "-A",
            "ingest_tasks",
            "worker",
            "--loglevel",
            "INFO",
            "-c",
            str(self.ctx.concurrency),
            "-n",
            f"bench-{self.ctx.run_id}-{node}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]

    def listener_argv(self) -> list[str]:
        return [str(VENV_BIN / "python"), "-m", "listener"]


class Naive(DatabaseDesign):
    name = "naive"

    def env(self) -> dict[str, str]:
        return self.base_env() | {"BENCH_MQTT_PORT": str(self.ctx.mqtt_port)}

    def worker_argv(self, node: int) -> list[str]:
        return [
            str(VENV_BIN / "celery"),
            "-A",
            "bench.naive",
            "worker",
            "--loglevel",
            "INFO",
            "-c",
            str(self.ctx.concurrency),
            "-Q",
            "bench_naive",
            "-n",
            f"bench-naive-{self.ctx.run_id}-{node}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]

    def listener_argv(self) -> list[str]:
        return [str(VENV_BIN / "python"), "-m", "bench.naive_listener"]

    def listener_count(self) -> int:
        return 1  # the naive listener has no shared subscription


class Ceiling(Design):
    name = "ceiling"
    unit = "messages"

    def __init__(self, ctx: RunContext, expected: Expected) -> None:
        super().__init__(ctx, expected)
        self.count = SPAWN.Value("q", 0, lock=False)
        self.reports: multiprocessing.Queue[ceiling.CounterReport] = SPAWN.Queue()
        self.process: SpawnProcess | None = None
        self.stop = SPAWN.Event()
        self.report: ceiling.CounterReport | None = None

    def target(self) -> int:
        return self.expected.messages

    def start_backend(self) -> None:
        return None

    def start_subscribers(self) -> None:
        job = ceiling.CounterJob(
            "127.0.0.1",
            self.ctx.mqtt_port,
            f"bench-{self.ctx.run_id}-ceiling",
            SESSION_EXPIRY_S,
            self.expected.messages,
        )
        subscribed = SPAWN.Event()
        self.stop.clear()
        self.process = SPAWN.Process(
            target=ceiling.run,
            name="ceiling-subscriber",
            args=(job, self.count, subscribed, self.stop, self.reports),
        )
        self.process.start()
        if not subscribed.wait(30):
            raise RuntimeError("the counting subscriber did not subscribe within 30 s")

    def stop_subscribers(self) -> None:
        if self.process is None or not self.process.is_alive():
            return
        self.stop.set()
        self.report = self.reports.get(timeout=30)
        self.process.join(10)

    def landed(self) -> int:
        return int(self.count.value)

    def roles(self) -> Roles:
        return {self.process.pid: "subscriber"} if self.process and self.process.pid else {}

    def close(self) -> None:
        self.stop_subscribers()


DESIGN_CLASSES: dict[str, type[Design]] = {"ours": Ours, "naive": Naive, "ceiling": Ceiling}

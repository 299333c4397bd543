"""Service instances a fault test owns: its own Mosquitto, Redis and PostgreSQL on free ports.

The shared services on this machine are used by other test runs at the same time, so a fault is
only ever injected into an instance started here, in a temporary directory, and removed after.
Each instance can be stopped gracefully, killed, and started again on the same port and data.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import redis

from migrations.runner import apply_pending
from tests.support import ROOT, Process, wait_until
from tests.timescale.cluster import hypertables

MOSQUITTO_CONF = ROOT / "deploy" / "mosquitto" / "local.conf"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def scratch_dir(prefix: str, owner: str | None = None) -> Path:
    """A temporary directory other service users can reach (pytest's tmp_path is mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def server_port() -> int:
    """A free port for a server that the test stops and starts again on it.

    Not one from the kernel's ephemeral range (what binding port 0 gives): while the server is
    down, any outgoing connection on the machine may be given that port as its own, and the
    restart then fails with "address already in use".
    """
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        port = random.randrange(10_000, ephemeral_low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use
        return port
    raise AssertionError(f"no free port between 10000 and {ephemeral_low}")


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class OwnedServer:
    """A server process of the test's own in a scratch directory, started again as often as asked."""

    dir: Path
    proc: Process | None

    def stop(self) -> None:
        """SIGTERM, and a clean exit: Mosquitto writes its persistence file (sessions and queued
        messages), Redis fsyncs its append-only file."""
        if self.proc is not None:
            assert self.proc.stop() == 0, self.proc.log()[-2000:]
            self.proc = None

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill_group()
        shutil.rmtree(self.dir, ignore_errors=True)


class OwnedMosquitto(OwnedServer):
    """Mosquitto configured as the project ships it (deploy/mosquitto/local.conf), on its own port."""

    def __init__(self, log_dir: Path) -> None:
        self.port = server_port()
        self.dir = scratch_dir("faults-mosquitto-", owner="mosquitto")
        conf = MOSQUITTO_CONF.read_text()
        conf = conf.replace("listener 1883 127.0.0.1", f"listener {self.port} 127.0.0.1")
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(conf.replace("@DATA_DIR@", f"{self.dir}/"))
        self._log_dir = log_dir
        self._starts = 0
        self.proc: Process | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._starts += 1
        argv = ["mosquitto", "-c", str(self.conf)]
        self.proc = Process(f"mosquitto-{self._starts}", argv, {}, self._log_dir)
        wait_until(lambda: accepts_connections(self.port), 15, what=f"mosquitto on :{self.port}")


class OwnedRedis(OwnedServer):
    """redis-server with the append-only file on (fsync every second), on its own port."""

    def __init__(self, log_dir: Path) -> None:
        self.port = server_port()
        self.dir = scratch_dir("faults-redis-")
        self._log_dir = log_dir
        self._starts = 0
        self.proc: Process | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        self._starts += 1
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
        self.proc = Process(f"redis-{self._starts}", argv, {}, self._log_dir)
        wait_until(self._loaded, 15, what=f"redis on :{self.port}")

    def _loaded(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:  # not listening yet, or still loading the AOF
            return False



def as_postgres(*argv: str) -> None:
    """initdb and pg_ctl refuse to run as root."""
    subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, timeout=60)


class OwnedPostgres:
    """A PostgreSQL 15 cluster of the test's own (trust auth), that it may stop for as long as it likes."""

    def __init__(self, timescaledb: bool = False) -> None:
        self.timescaledb = timescaledb
        self.port = server_port()
        self.dir = scratch_dir("faults-pg-", owner="postgres")
        self.data = self.dir / "data"
        as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                    "-E", "UTF8", "--locale=C", "--no-sync")
        self.running = False

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
        if self.timescaledb:  # as the shipped TimescaleDB image runs it; the migrations then make hypertables
            options += " -c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off"
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "postgres.log"),
                    "-o", options, "-w", "-t", "30", "start")
        self.running = True

    def stop(self) -> None:
        """A fast shutdown: open transactions are rolled back and every client is disconnected."""
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
        self.running = False

    def migrated_database(self, name: str) -> str:
        url = self.url(name)
        apply_pending(url)
        if self.timescaledb:
            assert {"ts_reading", "ts_point"} <= hypertables(url), f"not hypertables on :{self.port}"
        return url

    def close(self) -> None:
        if self.running:
            try:
                self.stop()
            except subprocess.SubprocessError:
                pid_file = self.data / "postmaster.pid"
                if pid_file.exists():
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def sigkill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)

"""The runtime lock alone runs the service: a virtualenv built as the Dockerfile builds the image.

The Dockerfile installs `requirements.lock` and nothing else, while .venv also holds the test
tools, which can hide a dependency the runtime lacks (pytest brought `packaging`, which kombu's
Redis transport imports, so the image's worker died at start). Here an empty virtualenv gets the
Dockerfile's own `pip install` line, with pip seeing PyPI only (this machine's pip configuration,
which adds local wheel indexes, is set aside, as in a `docker build`), and from that virtualenv
the migrations, the listener, a worker, beat and Flower start and a published message lands.

The virtualenv is cached outside the clone (~/.cache/traksense/runtime-venv/), keyed by the lock,
the install line and the Python that builds it: the first run on a machine installs from PyPI
(tens of seconds), later runs reuse it, and a changed lock builds a new one.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from psycopg import sql

from tests.conftest import _used_redis_dbs, fresh_redis_db
from tests.support import (
    PG_ADMIN,
    REDIS_HOST,
    ROOT,
    Process,
    free_port,
    publisher,
    query,
    service_env,
    unique,
    wait_until,
)

pytestmark = pytest.mark.integration

LOCK = ROOT / "requirements.lock"
DOCKERFILE = ROOT / "Dockerfile"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "traksense" / "runtime-venv"
COMPLETE = ".complete"  # written last: a venv without it was interrupted mid-build
UNUSED_DAYS = 14  # cached venvs of other locks not used for this long are removed
INSTALL_TIMEOUT_S = 900
# pip settings that choose where packages come from; a `docker build` has none of them.
PIP_SOURCE_VARS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX",
                   "PIP_CONSTRAINT", "PIP_REQUIREMENT")
AUTH = ("ops", unique("pw-"))
TELEMETRY = {
    "schema": "v1", "ts": "2025-10-07T15:30:00Z",
    "points": [{"name": "temp_agua", "t": "float", "v": 7.3, "u": "°C"},
               {"name": "compressor_1_on", "t": "bool", "v": True}],
}


# --- the virtualenv ---------------------------------------------------------------------------


def dockerfile_pip_install() -> list[str]:
    """The arguments after `pip` of the Dockerfile's RUN line that installs requirements.lock."""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        argv = shlex.split(line) if line.startswith("RUN pip install ") else []
        if LOCK.name in argv:
            return argv[2:]
    pytest.fail(f"the Dockerfile has no `RUN pip install ... {LOCK.name}` line")


def pypi_only_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PIP_SOURCE_VARS and k != "PYTHONPATH"}
    # pip reads no configuration file at all when PIP_CONFIG_FILE is the null device.
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def venv_key(pip_args: list[str]) -> str:
    digest = hashlib.sha256(LOCK.read_bytes())
    for part in (shlex.join(pip_args), sys.version, getattr(sys, "_base_executable", sys.executable)):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:16]


def usable(venv: Path) -> bool:
    if not (venv / COMPLETE).is_file():
        return False
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "pass"], capture_output=True, check=False)
    return probe.returncode == 0


def build(venv: Path, pip_args: list[str]) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # cwd=ROOT: the lock is named as the Dockerfile names it, relative to its WORKDIR.
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", *pip_args], cwd=ROOT,
                          env=pypi_only_env(), capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
                          check=False)
    assert done.returncode == 0, f"pip {shlex.join(pip_args)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    (venv / COMPLETE).write_text(shlex.join(pip_args) + "\n", encoding="utf-8")


def prune_unused(keep: Path) -> None:
    """Remove the cached venvs of other locks (or interrupted builds) unused for UNUSED_DAYS."""
    cutoff = time.time() - UNUSED_DAYS * 86400
    for venv in (p for p in CACHE_DIR.iterdir() if p.is_dir() and p != keep):
        marker = venv / COMPLETE
        if (marker if marker.exists() else venv).stat().st_mtime < cutoff:
            shutil.rmtree(venv, ignore_errors=True)
            (CACHE_DIR / f"{venv.name}.lock").unlink(missing_ok=True)


def runtime_venv() -> Path:
    """The cached virtualenv of the current lock, built first if there is none (one builder at a
    time: concurrent test sessions wait on a file lock)."""
    pip_args = dockerfile_pip_install()
    venv = CACHE_DIR / f"py{sys.version_info.major}.{sys.version_info.minor}-{venv_key(pip_args)}"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with (CACHE_DIR / f"{venv.name}.lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not usable(venv):
            build(venv, pip_args)
        (venv / COMPLETE).touch()
    prune_unused(keep=venv)
    return venv


def requirements(path: Path) -> Iterator[Requirement]:
    """The requirements of a requirements file or lock, following `-r`; hashes and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    for line in (re.sub(r"(^|\s)(#|--hash=).*", "", raw).strip() for raw in text.splitlines()):
        if line.startswith("-r "):
            yield from requirements(path.parent / line.split(maxsplit=1)[1])
        elif line:
            yield Requirement(line)


def pins(path: Path, here_only: bool = False) -> dict[str, str]:
    """Name -> pinned version; with `here_only`, of the entries whose marker holds on this Python."""
    return {canonicalize_name(req.name): str(req.specifier).removeprefix("==") for req in requirements(path)
            if not here_only or req.marker is None or req.marker.evaluate()}


# --- the service from it ----------------------------------------------------------------------


@dataclass
class Runtime:
    bin: Path
    database_url: str
    migrate: subprocess.CompletedProcess[str]
    prefix: str
    flower_port: int
    worker_name: str
    listener: Process
    worker: Process
    beat: Process
    flower: Process


def run_migrations(bin_dir: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": ""}
    return subprocess.run([str(bin_dir / "python"), "-m", "migrations"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def start_all(bin_dir: Path, env: dict[str, str], log_dir: Path, flower_port: int, worker_name: str,
              ) -> tuple[Process, Process, Process, Process]:
    """Start the four long-running processes at once; each test waits for its own."""
    celery = [str(bin_dir / "celery"), "-A", "ingest_tasks"]
    worker = Process("worker", [*celery, "worker", "--loglevel", "INFO", "-c", "1", "-n", worker_name,
                                "--without-gossip", "--without-mingle"], env, log_dir)
    listener = Process("listener", [str(bin_dir / "python"), "-m", "listener"], env, log_dir)
    # DEBUG: beat logs "Waking up" only after its scheduler's first tick.
    beat = Process("beat", [*celery, "beat", "--loglevel", "DEBUG", "--schedule",
                            str(log_dir / "celerybeat-schedule")], env, log_dir)
    flower = Process("flower", [*celery, "flower", f"--port={flower_port}", "--address=127.0.0.1"],
                     env, log_dir)
    return listener, worker, beat, flower


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def release_redis_db(index: int) -> None:
    redis.Redis(host=REDIS_HOST, port=6379, db=index).flushdb()
    _used_redis_dbs.discard(index)  # as the redis_db fixture does: 15 indexes go round


def terminate_all(processes: tuple[Process, ...]) -> None:
    for process in processes:
        process.signal(signal.SIGTERM)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    bin_dir = runtime_venv() / "bin"
    log_dir = tmp_path_factory.mktemp("runtime")
    # A database that does not exist yet: `python -m migrations` creates it, as on a first start.
    database_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + unique("traksense_runtime_")
    db_index = fresh_redis_db()
    prefix = unique("ts")
    flower_port = free_port()
    worker_name = f"{unique('runtime-')}@{socket.gethostname()}"
    # PYTHONPATH empty and the venv first on PATH: nothing of .venv can reach these processes.
    env = service_env(database_url, db_index, prefix, FLOWER_BASIC_AUTH=f"{AUTH[0]}:{AUTH[1]}",
                      PYTHONPATH="", PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    # Cleanups run last-registered first, and every one of them runs even when another fails.
    with ExitStack() as cleanup:
        cleanup.callback(drop_database, database_url)
        cleanup.callback(release_redis_db, db_index)
        migrate = run_migrations(bin_dir, database_url)
        processes = start_all(bin_dir, env, log_dir, flower_port, worker_name)
        for process in processes:
            cleanup.callback(process.stop)
        cleanup.callback(terminate_all, processes)  # all at once, so their stops overlap
        yield Runtime(bin_dir, database_url, migrate, prefix, flower_port, worker_name, *processes)


def get(port: int, path: str, auth: tuple[str, str] | None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


# --- the tests --------------------------------------------------------------------------------


def test_the_runtime_venv_holds_exactly_the_runtime_lock(runtime: Runtime) -> None:
    freeze = subprocess.run([str(runtime.bin / "python"), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, timeout=60, check=True, env=pypi_only_env())
    installed = dict(line.split("==", 1) for line in freeze.stdout.split())
    installed = {canonicalize_name(k): v for k, v in installed.items() if k not in ("pip", "setuptools")}
    assert installed == pins(LOCK, here_only=True)
    assert "pytest" not in installed  # what hid kombu's missing `packaging` in .venv


def test_migrations_create_and_migrate_a_new_database(runtime: Runtime) -> None:
    assert runtime.migrate.returncode == 0, runtime.migrate.stderr[-3000:]
    applied = [row[0] for row in query(runtime.database_url, "SELECT name FROM schema_migrations ORDER BY version")]
    assert applied == sorted(p.stem for p in (ROOT / "migrations").glob("*.sql"))
    assert query(runtime.database_url, "SELECT to_regclass('ts_measure')::text") == [("ts_measure",)]


def test_a_published_message_lands_in_ts_measure(runtime: Runtime) -> None:
    runtime.worker.wait_for_log("ready.", timeout=60)
    runtime.listener.wait_for_log("mqtt subscribed", timeout=60)
    tenant = unique("t")
    with publisher() as pub:
        pub.publish(f"{runtime.prefix}/{tenant}/s1/chiller-1/telem", TELEMETRY)
    rows = wait_until(lambda: query(runtime.database_url, "SELECT point_id FROM ts_measure WHERE tenant_id = %s "
                                    "ORDER BY point_id", (tenant,)) or None,
                      timeout=30, what="the message's rows in ts_measure")
    assert rows == [("compressor_1_on",), ("temp_agua",)]


def test_beat_starts_and_runs_its_scheduler(runtime: Runtime) -> None:
    runtime.beat.wait_for_log("beat: Waking up", timeout=60)  # after the scheduler's first tick
    assert "<ScheduleEntry: purge-dlq-daily ingest_tasks.purge_dlq()" in runtime.beat.log()


def test_flower_answers_on_its_port_behind_basic_auth_and_sees_the_worker(runtime: Runtime) -> None:
    runtime.flower.wait_for_log("Visit me at", timeout=60)
    runtime.worker.wait_for_log("ready.", timeout=60)
    port = runtime.flower_port

    def workers() -> str | None:
        status, body = get(port, "/api/workers?refresh=1", AUTH)
        return body if status == 200 and runtime.worker_name in body else None

    wait_until(workers, timeout=30, what=f"{runtime.worker_name} in Flower's /api/workers")
    assert get(port, "/api/workers", None)[0] == 401
    assert get(port, "/api/workers", (AUTH[0], "wrong"))[0] == 401


# --- the locks against their inputs (no virtualenv needed) ------------------------------------

INPUTS_AND_LOCKS = [("requirements.txt", "requirements.lock"), ("requirements-dev.txt", "requirements-dev.lock"),
                    ("requirements-exporter.txt", "requirements-exporter.lock")]


@pytest.mark.parametrize(("source", "lock"), INPUTS_AND_LOCKS)
def test_every_pin_of_an_input_is_in_its_lock(source: str, lock: str) -> None:
    """Fails when an input changed and `make lock` was not run."""
    chosen, locked = pins(ROOT / source), pins(ROOT / lock)
    assert {name: locked.get(name) for name in chosen} == chosen


def test_the_dev_lock_has_the_runtime_lock_s_versions() -> None:
    """The tests run on what the image ships."""
    runtime, dev = pins(LOCK), pins(ROOT / "requirements-dev.lock")
    assert {name: dev.get(name) for name in runtime} == runtime

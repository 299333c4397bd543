"""Real processes the benchmark starts: each with its log file, a readiness line and a clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class Service:
    """One started process (and its process group), its output in `<log_dir>/<name>.log`."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self._offset = self._log.tell()  # a restarted service appends: look only at its new lines
        self.popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_for_log(self, needle: str, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.log_path.open("rb") as log:
                log.seek(self._offset)
                seen = needle.encode() in log.read()
            if seen:
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; see {self.log_path}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: no {needle!r} within {timeout:.0f} s; see {self.log_path}")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        self._log.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


# The system broker's defaults (max_queued_messages 1000) would drop a benchmark's backlog.
MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 0
max_inflight_bytes 0
memory_limit 0
set_tcp_nodelay true
log_dest stdout
log_type error
log_type warning
log_type notice
"""


def start_mosquitto(log_dir: Path, name: str = "mosquitto") -> tuple[Service, int]:
    port = free_port()
    conf = log_dir / f"{name}.conf"
    conf.write_text(MOSQUITTO_CONF.format(port=port))
    service = Service(name, ["mosquitto", "-c", str(conf)], {}, log_dir)
    wait_for_port(port)
    return service, port

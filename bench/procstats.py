"""CPU seconds and memory of processes, read from /proc (no psutil: three fields are all we need).

A snapshot is taken when a measured window opens and another when it closes; the CPU of a
process is the difference (a process born inside the window counts from zero). Peak RSS is the
kernel's high-water mark (VmHWM) since the process started.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class ProcSample:
    pid: int
    name: str
    cpu_s: float
    rss_kb: int
    hwm_kb: int


def sample(pid: int) -> ProcSample | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        status = (PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    return ProcSample(pid, name, cpu, status_kb(status, "VmRSS"), status_kb(status, "VmHWM"))


def status_kb(status: str, key: str) -> int:
    for line in status.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def parent_of(pid: int) -> int | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def all_pids() -> list[int]:
    return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]


def children(pid: int) -> list[int]:
    return [p for p in all_pids() if parent_of(p) == pid]


def pids_named(name: str) -> list[int]:
    found = []
    for pid in all_pids():
        s = sample(pid)
        if s is not None and s.name == name:
            found.append(pid)
    return found


@dataclass(frozen=True)
class Usage:
    """One process over the measured window."""

    role: str
    pid: int
    cpu_s: float
    peak_rss_mb: float
    rss_start_mb: float
    rss_end_mb: float


def usage(role: str, start: ProcSample | None, end: ProcSample | None) -> Usage | None:
    if end is None:
        return None
    cpu0 = start.cpu_s if start is not None else 0.0
    rss0 = start.rss_kb if start is not None else 0
    return Usage(
        role,
        end.pid,
        round(end.cpu_s - cpu0, 2),
        round(end.hwm_kb / 1024, 1),
        round(rss0 / 1024, 1),
        round(end.rss_kb / 1024, 1),
    )


Roles = dict[int, str]  # pid -> role, e.g. "listener", "worker-1", "postgres"
Snapshot = dict[int, ProcSample]


def snapshot(roles: Roles) -> Snapshot:
    taken = {pid: sample(pid) for pid in roles}
    return {pid: s for pid, s in taken.items() if s is not None}


def usages(roles: Roles, start: Snapshot, end: Snapshot) -> list[Usage]:
    found = [usage(role, start.get(pid), end.get(pid)) for pid, role in roles.items()]
    return [u for u in found if u is not None]

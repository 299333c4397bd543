"""What a fault test reads from outside the processes under test, instead of guessing from timing.

A crash is only a meaningful fault when it lands at the moment it is meant to: a pool process
killed "mid-chunk" must really hold a chunk. Timing cannot promise that on a busy machine (a
chunk takes 15 ms on an idle one and seconds on a loaded one), so the test makes the moment
last: it holds a lock that every chunk's INSERT waits for, and then reads who is waiting from
PostgreSQL (which backend waits on a lock, and from which client port), the kernel (which
process owns that port) and the worker itself (Celery's `inspect active`: which pool process
it knows holds which chunk).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from celery import Celery
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

# Only waits that began this recently: the worker gives up a lock wait after its lock_timeout
# (store.LOCK_TIMEOUT_S, 10 s) and retries the chunk, so an older wait may end at any moment.
FRESH_WAIT_S = 3.0
LOCK_WAITERS = """
SELECT a.client_port FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
  AND (l.waitstart IS NULL OR l.waitstart > clock_timestamp() - make_interval(secs => %s))
"""


@contextmanager
def inserts_held(database_url: str, table: str = "ts_reading") -> Iterator[None]:
    """Every INSERT into `table` waits while this holds a SHARE lock on it, as behind a long
    `CREATE INDEX`: a pool process that reaches its chunk's INSERT stays there, transaction open."""
    with psycopg.connect(database_url) as conn:
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.Identifier(table)))
        try:
            yield
        finally:
            conn.rollback()


def lock_waiters(database_url: str) -> set[int]:
    """The client ports of the database's connections that began to wait for a lock just now."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(LOCK_WAITERS, (FRESH_WAIT_S,)).fetchall()
    return {int(port) for (port,) in rows if port is not None}


def server_port_of(database_url: str) -> int:
    return int(conninfo_to_dict(database_url).get("port") or 5432)


def client_ports(pid: int, server_port: int) -> set[int]:
    """The local ports of process `pid`'s TCP connections to `server_port` (none once it exited)."""
    try:
        inodes = socket_inodes(pid)
        tables = [Path(f"/proc/{pid}/net/{t}").read_text() for t in ("tcp", "tcp6")]
    except (FileNotFoundError, ProcessLookupError):
        return set()
    ports = set()
    for table in tables:
        for line in table.splitlines()[1:]:
            fields = line.split()  # sl local_address rem_address st ... uid timeout inode
            local, remote = (int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
            if fields[9] in inodes and remote == server_port:
                ports.add(local)
    return ports


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue  # closed since the directory was listed
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


class Inspector:
    """Celery's remote control, as `celery inspect` uses it, on the rig's broker."""

    def __init__(self, broker_url: str) -> None:
        self.app = Celery("faults-inspector", broker=broker_url, set_as_current=False)

    def chunks_in_hand(self) -> dict[int, str]:
        """Pool process id -> the chunk (task) id it is running, as the worker knows it."""
        replies = self.app.control.inspect(timeout=5.0, limit=1).active(safe=True) or {}
        return {int(task["worker_pid"]): str(task["id"])
                for tasks in replies.values() for task in tasks if task.get("worker_pid")}

    def close(self) -> None:
        self.app.close()


def chunk_stuck_in_insert(database_url: str, inspector: Inspector) -> tuple[int, str] | None:
    """A pool process waiting on a lock inside its chunk's transaction, and that chunk's id.

    The chunk cannot finish while the lock is held, so it is still in that process's hands
    when the caller acts on the answer.
    """
    waiting = lock_waiters(database_url)
    if not waiting:
        return None
    port = server_port_of(database_url)
    for pid, chunk_id in inspector.chunks_in_hand().items():
        if client_ports(pid, port) & waiting:
            return pid, chunk_id
    return None

"""How every process of ours connects to PostgreSQL: a connect timeout, and TCP keepalives on
both ends of the connection. The worker's store, the DLQ tooling and the migrations use it.
Refuses to know about tables or roles.
"""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict, make_conninfo

CONNECT_TIMEOUT_S = 3  # worker_process_init must not block for more than 4 s
# TCP keepalives on both ends of every connection: a peer gone without a word (a crashed host, a
# NAT or firewall dropping the flow) is noticed within 30 + 3 x 10 s, not the kernel's two hours.
KEEPALIVE_IDLE_S = 30
KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_COUNT = 3


def with_keepalives(dsn: str) -> str:
    """`dsn` with TCP keepalives for both ends of the connection, unless it sets its own.

    libpq's `keepalives*` parameters set the client's socket; the server's `tcp_keepalives_*`
    (sent as `options`) set its socket, so a backend whose client vanished lets go of its locks.
    """
    params = conninfo_to_dict(dsn)
    client = {"keepalives": 1, "keepalives_idle": KEEPALIVE_IDLE_S,
              "keepalives_interval": KEEPALIVE_INTERVAL_S, "keepalives_count": KEEPALIVE_COUNT}
    server = {"tcp_keepalives_idle": KEEPALIVE_IDLE_S, "tcp_keepalives_interval": KEEPALIVE_INTERVAL_S,
              "tcp_keepalives_count": KEEPALIVE_COUNT}
    options = str(params.get("options") or "")
    extra = " ".join(f"-c {name}={value}" for name, value in server.items() if name not in options)
    added: dict[str, str | int] = {k: v for k, v in client.items() if k not in params}
    if extra:
        added["options"] = f"{options} {extra}".strip()
    return make_conninfo(dsn, **added)

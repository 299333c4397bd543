"""TCP keepalive on the listener's connections (the MQTT socket and its Redis clients).

MQTT's keep-alive (PINGREQ) and Redis's socket timeouts notice a silent peer only while the
client is talking; the kernel's keepalive also ends a connection whose peer host vanished
without a FIN while nothing is sent (a held read, an idle Redis client), after about
IDLE + INTERVAL x COUNT seconds, so the client reconnects instead of waiting on a dead socket.
"""

from __future__ import annotations

import socket

KEEPALIVE_IDLE_S = 30  # quiet seconds before the first probe
KEEPALIVE_INTERVAL_S = 10  # seconds between probes
KEEPALIVE_PROBES = 3  # unanswered probes before the connection is dropped


def keepalive_options() -> dict[int, int]:
    """The TCP_KEEP* options this platform has (redis-py's `socket_keepalive_options`)."""
    wanted = (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
              ("TCP_KEEPCNT", KEEPALIVE_PROBES))
    return {getattr(socket, name): value for name, value in wanted if hasattr(socket, name)}


def enable_keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in keepalive_options().items():
        sock.setsockopt(socket.IPPROTO_TCP, option, value)

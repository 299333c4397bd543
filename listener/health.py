"""`python -m listener.health`: exit 0 when the listener is healthy, else print why and exit 1.

Healthy means: its metrics endpoint answers and says MQTT is connected, and Redis answers a PING
on a fresh connection (a held socket can look alive when it is not).
"""

from __future__ import annotations

import sys
import urllib.request

import redis

from ingest_tasks.settings import load_settings

TIMEOUT_S = 3


def problems() -> list[str]:
    settings = load_settings()
    found = []
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            text = response.read().decode()
        if "ingest_mqtt_connected 1.0" not in text:
            found.append("not connected to the MQTT broker")
    except OSError as exc:
        found.append(f"metrics endpoint {url} does not answer: {exc}")
    try:
        with redis.Redis.from_url(settings.celery_broker_url, socket_timeout=TIMEOUT_S,
                                  socket_connect_timeout=TIMEOUT_S) as client:
            client.ping()
    except redis.RedisError as exc:
        found.append(f"Redis does not answer: {exc}")
    return found


def main() -> int:
    found = problems()
    if found:
        print("unhealthy: " + "; ".join(found), file=sys.stderr)
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())

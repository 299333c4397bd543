#!/bin/sh
# Make sure a Docker Compose CLI that can validate docker-compose.yml is installed.
#
# tests/integration/test_compose.py runs `<compose> -f docker-compose.yml config`, which parses,
# interpolates and schema-checks the file without a Docker engine. Either CLI will do:
#   - `docker compose` (the v2 plugin, present wherever Docker CE / Docker Desktop is), or
#   - `docker-compose` (Debian/Ubuntu package `docker-compose`: 1.29 on bookworm/jammy/noble,
#     2.x on newer releases).
# If neither works, installs the `docker-compose` apt package (without docker.io: no daemon is
# needed). Idempotent: does nothing when a validator already works. Uses sudo when not root.
set -eu

if docker compose version >/dev/null 2>&1; then
    exit 0
fi
if docker-compose version >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-compose-validator: no Compose CLI and no apt-get; install Docker Compose" >&2
    exit 1
fi

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

install_compose() {
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends docker-compose
}

echo "ensure-compose-validator: installing the docker-compose package" >&2
# Try with the package lists as they are; refresh them once if that fails (stale or empty lists).
if ! install_compose >/dev/null 2>&1; then
    as_root apt-get update -q >/dev/null
    install_compose >/dev/null
fi

docker-compose version >/dev/null 2>&1 || {
    echo "ensure-compose-validator: docker-compose installed but does not run" >&2
    exit 1
}

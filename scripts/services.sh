#!/usr/bin/env bash
# Make PostgreSQL, Redis and Mosquitto answer on 127.0.0.1: a service that answers is used as it
# is; one that is installed but stopped is started; one that is missing is installed from the
# system's packages (apt) and started. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=$(pwd)/.run
mkdir -p "$RUN_DIR"

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
apt_updated=""
apt_install() {
  [ -n "$apt_updated" ] || { sudo_if_needed apt-get update -q; apt_updated=1; }
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}
wait_for() {  # port name
  for _ in $(seq 1 60); do answers "$1" && return 0; sleep 0.5; done
  echo "services: $2 did not come up on 127.0.0.1:$1" >&2; return 1
}

ensure_postgres() {
  answers 5432 && return 0
  local fresh=""
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "services: installing PostgreSQL" >&2
    apt_install postgresql; fresh=1
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [ -n "$fresh" ]; then
    # A database we just installed for this machine: let local TCP connections in without a
    # password, as DATABASE_URL's default (postgresql://postgres@localhost) expects.
    local hba=/etc/postgresql/$version/main/pg_hba.conf
    sudo_if_needed sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
  fi
  echo "services: starting PostgreSQL $version" >&2
  sudo_if_needed pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for 5432 PostgreSQL
}

ensure_redis() {
  answers 6379 && return 0
  command -v redis-server >/dev/null 2>&1 || { echo "services: installing Redis" >&2; apt_install redis-server; }
  answers 6379 && return 0  # the package may have started it
  echo "services: starting Redis (append-only file in $RUN_DIR/redis)" >&2
  mkdir -p "$RUN_DIR/redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly yes \
    --appendfsync everysec --dir "$RUN_DIR/redis" --logfile "$RUN_DIR/redis/redis.log"
  wait_for 6379 Redis
}

ensure_mosquitto() {
  answers 1883 && return 0
  command -v mosquitto >/dev/null 2>&1 || { echo "services: installing Mosquitto" >&2; apt_install mosquitto mosquitto-clients; }
  answers 1883 && return 0
  echo "services: starting Mosquitto (persistence in $RUN_DIR/mosquitto)" >&2
  mkdir -p "$RUN_DIR/mosquitto"
  sed "s|@DATA_DIR@|$RUN_DIR/mosquitto/|" deploy/mosquitto/local.conf > "$RUN_DIR/mosquitto.conf"
  mosquitto -d -c "$RUN_DIR/mosquitto.conf"
  wait_for 1883 Mosquitto
}

ensure_postgres
ensure_redis
ensure_mosquitto
echo "services: PostgreSQL, Redis and Mosquitto answer on 127.0.0.1" >&2

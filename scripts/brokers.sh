#!/usr/bin/env bash
# MQTT brokers for the tests' broker matrix, besides the shared Mosquitto: prints the broker's address.
#
#   scripts/brokers.sh ejabberd     ejabberd's mod_mqtt (MQTT 5 and 3.1.1), a test-owned node
#   scripts/brokers.sh rabbitmq     RabbitMQ's MQTT plugin (MQTT 3.1.1), a test-owned node
#   scripts/brokers.sh stop         stop both
#
# Each broker runs as a node of its own (own node name, ports, config, data and logs under the cache
# directory); the system's RabbitMQ node and Mosquitto are never touched. Installs the broker with
# apt-get when it is missing. A node that already runs with the wanted configuration is reused, so a
# second run pays a status check; a changed configuration restarts it. Both have two users:
# `ingest` (password `ingest-pw`, the listener) and `device` (`device-pw`, the publishers).
# Prints `host port` (stdout, one line); when the broker cannot be had, exits 1 with one line.
#
# Settings: EJABBERD_TEST_PORT (default 15310; +1 is its Erlang distribution port),
# RABBITMQ_MQTT_TEST_PORT (default 15320; +1 AMQP, +2 distribution), TRAKSENSE_CACHE (default
# /var/cache/traksense as root, ~/.cache/traksense otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."

EJABBERD_PORT=${EJABBERD_TEST_PORT:-15310}
RABBITMQ_PORT=${RABBITMQ_MQTT_TEST_PORT:-15320}
if [ "$(id -u)" -eq 0 ]; then CACHE=${TRAKSENSE_CACHE:-/var/cache/traksense}
else CACHE=${TRAKSENSE_CACHE:-$HOME/.cache/traksense}; fi
USERS=("ingest ingest-pw" "device device-pw")

say() { echo "brokers: $*" >&2; }
die() { say "$*"; exit 1; }
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_install() {  # package...; the package lists are refreshed only when the install fails without them
  local log=$CACHE/apt.log
  say "installing $* (log in $log)"
  local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@")
  sudo_if_needed "${install[@]}" >"$log" 2>&1 ||
    { sudo_if_needed apt-get update -q >>"$log" 2>&1 && sudo_if_needed "${install[@]}" >>"$log" 2>&1; } ||
    die "cannot install $* with apt-get (see $log)"
}

# Write $2 to $1 when it differs; succeeds when the file changed.
update_file() { if [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; then return 1; fi; printf '%s\n' "$2" >"$1"; }

# --- ejabberd -------------------------------------------------------------------------------------
EJ_DIR=$CACHE/ejabberd-$EJABBERD_PORT
EJ_NODE=traksense-ejabberd-$EJABBERD_PORT@localhost

# The Debian package's ejabberdctl runs the node as the `ejabberd` user when called by root.
ej_ctl() { ejabberdctl --config-dir "$EJ_DIR" --spool "$EJ_DIR/spool" --logs "$EJ_DIR/logs" --node "$EJ_NODE" "$@"; }

ejabberd_config() {
  # mod_mqtt's queue for a session (max_queue, 5,000 by default) overflows while the listener is
  # away or slow, and ejabberd then discards the session; session_expiry caps the client's own
  # expiry (5 minutes by default). The users and their passwords are ejabberd's internal ones.
  cat <<EOF
hosts:
  - localhost
loglevel: warning
log_rotate_count: 0
auth_method: [internal]
auth_password_format: plain
listen:
  -
    port: $EJABBERD_PORT
    ip: "127.0.0.1"
    module: mod_mqtt
    backlog: 1000
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
modules:
  mod_mqtt:
    max_queue: 100000
    session_expiry: 86400
EOF
}

ejabberd_ctl_config() {
  cat <<EOF
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"
EJABBERD_PID_PATH=$EJ_DIR/ejabberd.pid
ERL_DIST_PORT=$((EJABBERD_PORT + 1))
INET_DIST_INTERFACE=127.0.0.1
EJABBERD_BYPASS_WARNINGS=true
EOF
}

ensure_ejabberd() {
  command -v ejabberdctl >/dev/null 2>&1 || apt_install ejabberd
  mkdir -p "$EJ_DIR/spool" "$EJ_DIR/logs"
  local changed=0
  update_file "$EJ_DIR/ejabberd.yml" "$(ejabberd_config)" && changed=1
  update_file "$EJ_DIR/ejabberdctl.cfg" "$(ejabberd_ctl_config)" && changed=1
  touch "$EJ_DIR/inetrc"  # ejabberdctl hands the config directory's inetrc to Erlang
  [ "$(id -u)" -ne 0 ] || chown -R ejabberd: "$EJ_DIR"
  if ej_ctl status >/dev/null 2>&1; then
    [ "$changed" -eq 0 ] && return 0  # its users were made when it started
    say "ejabberd's configuration changed: restarting it"
    ej_ctl stop >/dev/null && ej_ctl stopped >/dev/null
  fi
  answers "$EJABBERD_PORT" && die "port $EJABBERD_PORT is taken by another server; set EJABBERD_TEST_PORT to a free port"
  ej_ctl start && ej_ctl started >/dev/null 2>&1 ||
    die "ejabberd did not start (see $EJ_DIR/logs/ejabberd.log and error.log)"
  answers "$EJABBERD_PORT" || die "ejabberd started but does not answer on $EJABBERD_PORT (see $EJ_DIR/logs)"
  ensure_ejabberd_users
}

ensure_ejabberd_users() {
  local known pair
  known=$(ej_ctl registered_users localhost)
  for pair in "${USERS[@]}"; do
    set -- $pair
    grep -qx "$1" <<<"$known" || ej_ctl register "$1" localhost "$2" >/dev/null ||
      die "cannot register the ejabberd user $1"
  done
}

# --- RabbitMQ -------------------------------------------------------------------------------------
RMQ_DIR=$CACHE/rabbitmq-$RABBITMQ_PORT
RMQ_NODE=traksense-rabbitmq-$RABBITMQ_PORT@localhost
RMQ_BIN=/usr/lib/rabbitmq/bin

# As root the node runs as the `rabbitmq` user, sharing that user's Erlang cookie with its CLI tools.
rmq() {
  local env=(env RABBITMQ_CONF_ENV_FILE="$RMQ_DIR/rabbitmq-env.conf" RABBITMQ_NODENAME="$RMQ_NODE"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$((RABBITMQ_PORT + 1))
    RABBITMQ_DIST_PORT=$((RABBITMQ_PORT + 2)) ERL_EPMD_ADDRESS=127.0.0.1
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    RABBITMQ_CONFIG_FILE="$RMQ_DIR/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_DIR/enabled_plugins"
    RABBITMQ_MNESIA_BASE="$RMQ_DIR/mnesia" RABBITMQ_LOG_BASE="$RMQ_DIR/log" RABBITMQ_PID_FILE="$RMQ_DIR/pid")
  local tool=$1; shift
  if [ "$(id -u)" -eq 0 ]; then
    (cd /var/lib/rabbitmq && runuser -u rabbitmq -- "${env[@]}" HOME=/var/lib/rabbitmq "$RMQ_BIN/$tool" "$@")
  else "${env[@]}" "$RMQ_BIN/$tool" "$@"; fi
}

rabbitmq_config() {
  # mqtt.prefetch is how many unacknowledged messages the plugin sends one subscriber (10 by
  # default): the listener acknowledges a chunk at a time, so it needs a chunk's worth and more.
  # 3,200 is what the listener allows in flight with MQTT 5 (INGEST_BATCH_SIZE 800 x 4 chunks).
  # A clean_session=0 subscription is a durable queue; subscription_ttl is how long it outlives
  # its client (1 day here; unset, it never expires).
  cat <<EOF
listeners.tcp.default = 127.0.0.1:$((RABBITMQ_PORT + 1))
mqtt.listeners.tcp.default = 127.0.0.1:$RABBITMQ_PORT
mqtt.allow_anonymous = false
mqtt.prefetch = 3200
mqtt.durable_queue_type = classic
mqtt.subscription_ttl = 86400000
log.file.level = warning
EOF
}

ensure_rabbitmq() {
  [ -x "$RMQ_BIN/rabbitmq-server" ] || apt_install rabbitmq-server
  ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-*/plugins/rabbitmq_mqtt-* >/dev/null 2>&1 ||
    die "RabbitMQ is installed without its rabbitmq_mqtt plugin"
  mkdir -p "$RMQ_DIR/mnesia" "$RMQ_DIR/log"
  local changed=0
  update_file "$RMQ_DIR/rabbitmq.conf" "$(rabbitmq_config)" && changed=1
  update_file "$RMQ_DIR/enabled_plugins" "[rabbitmq_mqtt]." && changed=1
  update_file "$RMQ_DIR/rabbitmq-env.conf" "NODENAME=$RMQ_NODE" || true  # not the system's env file
  [ "$(id -u)" -ne 0 ] || chown -R rabbitmq: "$RMQ_DIR"
  if rmq rabbitmqctl -q -n "$RMQ_NODE" await_startup --timeout 5 >/dev/null 2>&1; then
    [ "$changed" -eq 0 ] && return 0  # its users were made when it started
    say "RabbitMQ's configuration changed: restarting it"
    rmq rabbitmqctl -q -n "$RMQ_NODE" stop "$RMQ_DIR/pid" >/dev/null
  fi
  answers "$RABBITMQ_PORT" && die "port $RABBITMQ_PORT is taken by another server; set RABBITMQ_MQTT_TEST_PORT to a free port"
  rm -f "$RMQ_DIR/pid"
  rmq rabbitmq-server -detached >"$RMQ_DIR/start.log" 2>&1 || die "RabbitMQ did not start (see $RMQ_DIR/start.log)"
  rmq rabbitmqctl -q -n "$RMQ_NODE" wait "$RMQ_DIR/pid" --timeout 90 >>"$RMQ_DIR/start.log" 2>&1 ||
    die "RabbitMQ did not start (see $RMQ_DIR/start.log and $RMQ_DIR/log)"
  answers "$RABBITMQ_PORT" || die "RabbitMQ started but its MQTT plugin does not answer on $RABBITMQ_PORT"
  ensure_rabbitmq_users
}

ensure_rabbitmq_users() {
  local known pair
  known=$(rmq rabbitmqctl -q -n "$RMQ_NODE" list_users --no-table-headers | cut -f1)
  for pair in "${USERS[@]}"; do
    set -- $pair
    grep -qx "$1" <<<"$known" && continue
    { rmq rabbitmqctl -q -n "$RMQ_NODE" add_user "$1" "$2" &&
      rmq rabbitmqctl -q -n "$RMQ_NODE" set_permissions "$1" ".*" ".*" ".*"; } >/dev/null ||
      die "cannot add the RabbitMQ user $1"
  done
}

stop_all() {
  if command -v ejabberdctl >/dev/null 2>&1 && [ -d "$EJ_DIR" ] && ej_ctl status >/dev/null 2>&1; then
    ej_ctl stop >/dev/null && ej_ctl stopped >/dev/null
  fi
  if [ -f "$RMQ_DIR/pid" ]; then rmq rabbitmqctl -q -n "$RMQ_NODE" stop "$RMQ_DIR/pid" >/dev/null 2>&1 || true; fi
}

mkdir -p "$CACHE"
exec 9>"$CACHE/brokers.lock"
flock 9  # one run at a time installs or starts; the others wait and then reuse it
case "${1:-}" in
  ejabberd) ensure_ejabberd 9>&-; echo "127.0.0.1 $EJABBERD_PORT" ;;
  rabbitmq) ensure_rabbitmq 9>&-; echo "127.0.0.1 $RABBITMQ_PORT" ;;
  stop) stop_all ;;
  *) die "usage: scripts/brokers.sh ejabberd|rabbitmq|stop" ;;
esac

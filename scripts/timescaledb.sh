#!/usr/bin/env bash
# TimescaleDB for the tests: prints the admin DSN of a PostgreSQL 15 cluster that preloads it.
#
# Uses the TimescaleDB installed into the system's PostgreSQL 15 when it is the wanted version;
# otherwise builds it once per machine from TIMESCALEDB_SOURCE (a release tarball or an unpacked
# source tree; default ../shared/timescaledb/timescaledb-2.28.3.tar.gz, relative to the
# repository) in a cache directory outside the clone, and installs it. Then starts, or reuses, a
# test-owned cluster on its own port (TIMESCALEDB_TEST_PORT, default 5434; trust auth on
# 127.0.0.1) whose data lives in the same cache directory. A second run pays only a version check.
#
#   scripts/timescaledb.sh          make it available and print the DSN (stdout, one line)
#   scripts/timescaledb.sh stop     stop the test cluster
#
# Settings: TIMESCALEDB_SOURCE, TIMESCALEDB_TEST_PORT, TRAKSENSE_CACHE (default /var/cache/traksense
# as root, ~/.cache/traksense otherwise). When TimescaleDB cannot be had it exits 1 with one line.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=2.28.3  # the last TimescaleDB release that supports PostgreSQL 15
PG_MAJOR=15
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$PG_BIN/pg_config
SOURCE=${TIMESCALEDB_SOURCE:-../shared/timescaledb/timescaledb-$VERSION.tar.gz}
PORT=${TIMESCALEDB_TEST_PORT:-5434}
if [ "$(id -u)" -eq 0 ]; then CACHE=${TRAKSENSE_CACHE:-/var/cache/traksense}
else CACHE=${TRAKSENSE_CACHE:-$HOME/.cache/traksense}; fi
CLUSTER=$CACHE/pg$PG_MAJOR-timescaledb-$PORT  # holds data/ and postgres.log, owned by the server's user
DSN=postgresql://postgres@127.0.0.1:$PORT/postgres

say() { echo "timescaledb: $*" >&2; }
die() { say "$*"; exit 1; }
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
# initdb and pg_ctl refuse to run as root: as root the cluster belongs to the postgres user.
as_server_user() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

installed() {
  local share lib
  share=$("$PG_CONFIG" --sharedir) && lib=$("$PG_CONFIG" --pkglibdir) || return 1
  grep -qs "^default_version = '$VERSION'" "$share/extension/timescaledb.control" &&
    [ -f "$share/extension/timescaledb--$VERSION.sql" ] && [ -f "$lib/timescaledb-$VERSION.so" ]
}

ensure_build_tools() {  # PostgreSQL's server headers (which bring libpq's and OpenSSL's), cmake, a compiler
  local missing=()
  [ -f "$("$PG_CONFIG" --includedir-server)/postgres.h" ] || missing+=("postgresql-server-dev-$PG_MAJOR")
  for tool in cmake gcc make; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  local log=$CACHE/apt.log
  say "installing ${missing[*]} (log in $log)"
  local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}")
  # The package lists are refreshed only when the install fails without it.
  sudo_if_needed "${install[@]}" >"$log" 2>&1 ||
    { sudo_if_needed apt-get update -q >>"$log" 2>&1 && sudo_if_needed "${install[@]}" >>"$log" 2>&1; } ||
    die "cannot install ${missing[*]} with apt-get (see $log)"
}

# The build directory is named after what it builds, so a changed source builds afresh.
build_key() {
  if [ -d "$SOURCE" ]; then echo "tree-$(realpath "$SOURCE" | sha256sum | cut -c1-16)"
  else echo "$(sha256sum "$SOURCE" | cut -c1-16)"; fi
}

unpack() {  # into $1/src
  if [ -d "$SOURCE" ]; then cp -a "$SOURCE/." "$1/src"
  else mkdir "$1/src" && tar -xzf "$SOURCE" -C "$1/src" --strip-components=1; fi
  grep -qs "^version = $VERSION\$" "$1/src/version.config" ||
    die "TIMESCALEDB_SOURCE ($SOURCE) is not TimescaleDB $VERSION (see its version.config)"
}

build() {  # in $1, leaving $1/.built once the build succeeded
  [ -f "$1/.built" ] && return 0
  rm -rf "$1" && mkdir -p "$1"
  unpack "$1"
  say "building TimescaleDB $VERSION in $1 (1-3 minutes on 2 cores; once per machine)"
  (cd "$1/src" &&
    BUILD_FORCE_REMOVE=true ./bootstrap -DPG_CONFIG="$PG_CONFIG" -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
      -DLINTER=OFF -DCMAKE_BUILD_TYPE=Release &&
    make -C build -j"$(nproc)") >"$1/build.log" 2>&1 ||
    die "building TimescaleDB $VERSION failed (see $1/build.log)"
  touch "$1/.built"
}

ensure_installed() {
  installed && return 0
  [ -e "$SOURCE" ] || die "TimescaleDB $VERSION is not installed and TIMESCALEDB_SOURCE ($SOURCE) does not exist;" \
    "set it to a timescaledb-$VERSION tarball or source tree"
  ensure_build_tools
  local dir
  dir=$CACHE/timescaledb-$VERSION-$(build_key)
  build "$dir"
  sudo_if_needed make -C "$dir/src/build" install >"$dir/install.log" 2>&1 ||
    die "installing TimescaleDB $VERSION failed (see $dir/install.log)"
  installed || die "TimescaleDB $VERSION was installed but $PG_CONFIG does not find it"
  say "installed TimescaleDB $VERSION into PostgreSQL $PG_MAJOR"
}

init_cluster() {
  [ -f "$CLUSTER/data/PG_VERSION" ] && return 0
  rm -rf "$CLUSTER" && mkdir -p "$CLUSTER"
  [ "$(id -u)" -ne 0 ] || chown postgres: "$CLUSTER"
  as_server_user "$PG_BIN/initdb" -D "$CLUSTER/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
    >"$CLUSTER/initdb.log" 2>&1 || die "initdb failed (see $CLUSTER/initdb.log)"
  # Test data only: a lost last commit after a crash is fine, so commits do not wait for the disk.
  as_server_user tee -a "$CLUSTER/data/postgresql.conf" >/dev/null <<EOF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$CLUSTER'
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
synchronous_commit = off
EOF
}

ours_answers() {  # our cluster answers on $PORT; fails when another server holds the port
  answers "$PORT" || return 1
  local dir
  dir=$("$PG_BIN/psql" "$DSN" -XAtc "SHOW data_directory" 2>/dev/null) || dir="?"
  [ "$dir" = "$CLUSTER/data" ] ||
    die "port $PORT is taken by another server ($dir); set TIMESCALEDB_TEST_PORT to a free port"
}

ensure_cluster() {
  ours_answers && return 0
  init_cluster
  # 9>&-: the server must not inherit the lock, or it would hold it for as long as it runs.
  as_server_user "$PG_BIN/pg_ctl" -D "$CLUSTER/data" -l "$CLUSTER/postgres.log" -w -t 60 start >/dev/null 9>&- ||
    die "the test cluster did not start (see $CLUSTER/postgres.log)"
  "$PG_BIN/psql" "$DSN" -XAtc "SHOW shared_preload_libraries" | grep -q timescaledb ||
    die "the test cluster on port $PORT does not preload timescaledb (see $CLUSTER/data/postgresql.conf)"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/timescaledb.lock"
flock 9  # one run at a time builds, installs or starts; the others wait and then reuse it
case "${1:-start}" in
  start) ensure_installed; ensure_cluster; echo "$DSN" ;;
  stop) [ ! -f "$CLUSTER/data/postmaster.pid" ] || as_server_user "$PG_BIN/pg_ctl" -D "$CLUSTER/data" -w stop >/dev/null ;;
  *) die "usage: scripts/timescaledb.sh [start|stop]" ;;
esac

#!/usr/bin/env bash
# Make every secret docker-compose.yml needs, once: DIR/.env and DIR/secrets/ (DIR is where
# docker-compose.yml is; default: this repository). Each password is 48 random hex characters
# (URL-safe: several go into URLs). NAME: the host names and IP addresses devices use for MQTT
# over TLS (scripts/make-tls-cert.sh; default localhost 127.0.0.1). Refuses to overwrite an
# existing .env or secrets/. As root it also gives the files the containers' users (broker uid
# 1883, app uid 10001); otherwise it prints the two chown commands to run.
#
#   scripts/make-secrets.sh [DIR [NAME...]]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$here/..}
[ $# -gt 0 ] && shift
for existing in "$dir/.env" "$dir/secrets"; do
    if [ -e "$existing" ]; then
        echo "make-secrets: $existing exists; move it away first to make new secrets" >&2
        exit 1
    fi
done
command -v openssl >/dev/null || { echo "make-secrets: openssl is not installed" >&2; exit 1; }

umask 077
secrets=$dir/secrets
mkdir -p "$secrets"
"$here/make-tls-cert.sh" "$secrets/tls" "$@" >/dev/null
pw() { openssl rand -hex 24; }
admin=$(pw)
printf '%s\n' "$admin" > "$secrets/mqtt-admin-password"
printf 'mqtt://admin:%s@mqtt:1883\n' "$admin" > "$secrets/mqtt-admin-url"
printf 'mqtt://ingest:%s@mqtt:1883\n' "$(pw)" > "$secrets/mqtt-listener-url"
cat > "$dir/.env" <<ENV
POSTGRES_PASSWORD=$(pw)
TRAKSENSE_OWNER_PASSWORD=$(pw)
TRAKSENSE_WORKER_PASSWORD=$(pw)
TRAKSENSE_DLQ_PASSWORD=$(pw)
REDIS_PASSWORD=$(pw)
FLOWER_BASIC_AUTH=ops:$(pw)
GRAFANA_ADMIN_PASSWORD=$(pw)
MQTT_ADMIN_PASSWORD_FILE=./secrets/mqtt-admin-password
MQTT_ADMIN_URL_FILE=./secrets/mqtt-admin-url
MQTT_LISTENER_URL_FILE=./secrets/mqtt-listener-url
MQTT_TLS_DIR=./secrets/tls
ENV

# The containers read these as their own users: the broker (uid 1883) its key and admin
# password, the app image (uid 10001) the MQTT URLs.
owners=("1883:1883 $secrets/tls/server.key $secrets/mqtt-admin-password"
        "10001:10001 $secrets/mqtt-admin-url $secrets/mqtt-listener-url")
for entry in "${owners[@]}"; do
    if [ "$(id -u)" -eq 0 ]; then
        # shellcheck disable=SC2086  # the entry is an owner and file paths without spaces
        chown $entry
    else
        echo "make-secrets: now run: sudo chown $entry" >&2
    fi
done
echo "make-secrets: wrote $dir/.env and $secrets/ (give devices $secrets/tls/ca.crt)" >&2

#!/bin/sh
# Entry point of the compose broker: on the first start, create the dynamic security plugin's
# file with the admin account only, then run Mosquitto. Later starts keep the file (and every
# device the CLI has added since): it lives on the data volume and the plugin rewrites it.
#
#   MQTT_ADMIN_USER            the admin's user name (default: admin)
#   MQTT_ADMIN_PASSWORD_FILE   a file holding the admin's password (a Docker secret); required
#                              on the first start, never printed
#   DYNSEC_FILE                where the plugin's file lives (mosquitto.conf's plugin_opt_config_file)
set -eu

DYNSEC_FILE="${DYNSEC_FILE:-/mosquitto/data/dynamic-security.json}"
MQTT_ADMIN_USER="${MQTT_ADMIN_USER:-admin}"

if [ ! -s "$DYNSEC_FILE" ]; then
  if [ -z "${MQTT_ADMIN_PASSWORD_FILE:-}" ] || [ ! -s "$MQTT_ADMIN_PASSWORD_FILE" ]; then
    echo "dynsec-init: MQTT_ADMIN_PASSWORD_FILE must name a non-empty file holding the broker admin's password" >&2
    exit 1
  fi
  password="$(head -n 1 "$MQTT_ADMIN_PASSWORD_FILE")"
  # The password goes through stdin (asked twice), never on a command line.
  printf '%s\n%s\n' "$password" "$password" \
    | mosquitto_ctrl dynsec init "$DYNSEC_FILE" "$MQTT_ADMIN_USER" >/dev/null
  unset password
  chmod 600 "$DYNSEC_FILE"
  # The broker drops root for this user before the plugin reads and rewrites the file.
  if id mosquitto >/dev/null 2>&1; then chown mosquitto:mosquitto "$DYNSEC_FILE"; fi
  echo "dynsec-init: created $DYNSEC_FILE with the admin account '$MQTT_ADMIN_USER'" >&2
fi

exec "$@"

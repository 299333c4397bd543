#!/bin/sh
# Make a self-signed CA and a server certificate it signs, to try MQTT over TLS (8883).
#
#   scripts/make-tls-cert.sh DIR [NAME...]
#
# DIR gets ca.crt (give it to devices: mosquitto_pub --cafile ca.crt), ca.key (keep it, or
# delete it once done: it signs certificates devices will trust), server.crt and server.key (for
# the broker: MQTT_TLS_DIR=DIR in docker-compose.yml's environment). NAME: the host names and IP
# addresses devices connect to, written into the certificate's subjectAltName (default:
# localhost 127.0.0.1); a device checks the name it dialled against them. Valid 825 days.
# Refuses to overwrite an existing file: move old ones away to make new ones.
# For production, use a certificate from your own or a public CA; only server.crt (with its
# chain) and server.key are needed.
set -eu

if [ $# -lt 1 ]; then
    echo "usage: $0 DIR [NAME...]  (names devices connect to; default: localhost 127.0.0.1)" >&2
    exit 2
fi
dir=$1
shift
[ $# -gt 0 ] || set -- localhost 127.0.0.1

for file in ca.crt ca.key server.crt server.key; do
    if [ -e "$dir/$file" ]; then
        echo "make-tls-cert: $dir/$file exists; move it away first" >&2
        exit 1
    fi
done
command -v openssl >/dev/null || { echo "make-tls-cert: openssl is not installed" >&2; exit 1; }

san=""
for name in "$@"; do
    case $name in
        *[!0-9.]*) kind=DNS ;;  # anything but digits and dots is a host name
        *) kind=IP ;;
    esac
    san="${san:+$san,}$kind:$name"
done

# A new DIR is 0755 whatever the umask: the broker's user must reach server.key inside it.
[ -d "$dir" ] || { mkdir -p "$dir" && chmod 755 "$dir"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077

openssl req -x509 -newkey rsa:3072 -sha256 -nodes -days 825 -subj "/CN=TrakSense MQTT test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
openssl req -newkey rsa:3072 -sha256 -nodes -subj "/CN=$1" \
    -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' \
    "$san" > "$work/server.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
    -days 825 -sha256 -extfile "$work/server.ext" -out "$work/server.crt" 2>/dev/null

# Certificates 0644, keys 0600. Mosquitto reads server.key after dropping root for its own user:
# give that user the file (the eclipse-mosquitto image's is uid 1883), as the message below says.
chmod 644 "$work/ca.crt" "$work/server.crt"
mv "$work/ca.crt" "$work/ca.key" "$work/server.crt" "$work/server.key" "$dir/"
echo "make-tls-cert: $dir/ca.crt (for devices), $dir/server.crt and server.key (for the broker) for $san"
echo "make-tls-cert: the broker reads server.key as its own user: sudo chown 1883:1883 $dir/server.key"

#!/usr/bin/env bash
# Create or refresh the project's virtualenv (.venv) from the pinned requirements.
# Finds a Python >= 3.11 (installing python3 + venv from the system's packages if none works),
# and reinstalls only when a requirements file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
STAMP=$VENV/.requirements.sha
want=$(cat requirements.txt requirements-dev.txt requirements-bench.txt | sha256sum | cut -d' ' -f1)

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

find_python() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi

if ! PY=$(find_python); then
  echo "python-env: no Python >= 3.11 with venv found; installing python3 and python3-venv" >&2
  sudo_if_needed apt-get update -q
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv python3-dev
  PY=$(find_python) || { echo "python-env: this system's python3 is older than 3.11; install Python 3.11+ and retry" >&2; exit 1; }
fi

echo "python-env: building $VENV with $($PY --version)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements-dev.txt
echo "$want" > "$STAMP"

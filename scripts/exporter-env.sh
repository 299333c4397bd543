#!/usr/bin/env bash
# Create or refresh the celery-exporter's own virtualenv (.venv-exporter) from
# requirements-exporter.lock (hash-checked); reinstalls only when the lock changed. Safe to run again.
#
# The exporter (PyPI prometheus-exporter-celery) needs Python 3.11 or 3.12, pins redis<6 and
# prometheus-client<0.22 (which clash with .venv), and installs a top-level package named `src`
# with no console script. Start it with:
#   .venv-exporter/bin/python -c 'from src.cli import cli; cli()' --broker-url redis://... --port 9808
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-exporter
LOCK=requirements-exporter.lock
STAMP=$VENV/.requirements.sha
want=$(sha256sum "$LOCK" | cut -d' ' -f1)

find_python() {
  for candidate in python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys, venv, ensurepip; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi

PY=$(find_python) || { echo "exporter-env: celery-exporter needs Python 3.11 or 3.12 with venv; none found" >&2; exit 1; }
echo "exporter-env: building $VENV with $($PY --version)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# The venv's own pip, not upgraded (an upgrade would fetch something the lock does not pin).
"$VENV/bin/python" -m pip install -q --require-hashes -r "$LOCK"
"$VENV/bin/python" -c 'from src.cli import cli' || { echo "exporter-env: src.cli does not import" >&2; exit 1; }
echo "$want" > "$STAMP"

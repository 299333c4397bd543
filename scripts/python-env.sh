#!/usr/bin/env bash
# Create or refresh the project's virtualenv (.venv) from requirements-dev.lock: the runtime lock's
# pins plus the test, lint and benchmark tools, every file hash-checked (--require-hashes).
# Finds a Python >= 3.11 (installing python3 + venv from the system's packages if none works),
# and reinstalls only when the lock changed; then uninstalls what the lock does not list, so a
# package dropped from it cannot keep hiding a missing dependency in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
LOCK=requirements-dev.lock
STAMP=$VENV/.requirements.sha
want=$(sha256sum "$LOCK" | cut -d' ' -f1)

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
# The venv's own pip, not upgraded: an upgrade would fetch something the lock does not pin.
# With hashes required pip picks, among the files of a pinned version, one whose hash the lock
# lists, so a local wheel index in pip's configuration is used only where it holds the same file.
"$VENV/bin/python" -m pip install -q --require-hashes -r "$LOCK"
"$VENV/bin/python" - "$LOCK" <<'PY'
import re, subprocess, sys
from importlib.metadata import distributions

def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()

with open(sys.argv[1], encoding="utf-8") as lock:
    locked = {norm(m[1]) for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", lock.read(), re.M)}
keep = locked | {"pip", "setuptools", "wheel"}  # the venv's own installer, never in a lock
extra = sorted({d.metadata["Name"] for d in distributions() if norm(d.metadata["Name"]) not in keep})
if extra:
    print("python-env: uninstalling what", sys.argv[1], "does not list:", " ".join(extra), file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", *extra], check=True)
PY
echo "$want" > "$STAMP"

# `make run` runs the service, `make test` passes the tests; both set everything up from nothing.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test lint setup venv exporter-env services migrate clean bench lock

run: setup migrate exporter-env
	$(VENV)/bin/honcho start -f Procfile

test: setup exporter-env
	scripts/ensure-compose-validator.sh
	$(VENV)/bin/pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy .

setup: venv services

venv:
	scripts/python-env.sh

# celery-exporter in a virtualenv of its own: its pins clash with .venv's.
exporter-env:
	scripts/exporter-env.sh

services:
	scripts/services.sh

migrate: setup
	$(PY) -m migrations

# Regenerate the lock files from the requirements*.txt inputs (docs/development.md, "Dependencies"). Pins already
# in a lock are kept unless an input asks otherwise; `make lock LOCK_ARGS=--upgrade` moves every
# unpinned package to its newest release. Hashes are those of uv's default index (PyPI): uv reads
# neither pip's configuration nor this machine's local indexes, and the UV_* index variables are
# cleared, so the locks install on any machine. --universal keeps environment markers
# (backports.zstd only before Python 3.14). The dev lock takes its runtime pins from
# requirements.lock, so the tests run what the image ships.
LOCK_ARGS ?=
UV_COMPILE := env -u UV_INDEX -u UV_INDEX_URL -u UV_DEFAULT_INDEX -u UV_EXTRA_INDEX_URL -u UV_FIND_LINKS \
	$(VENV)/bin/uv pip compile --quiet --no-config --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock" $(LOCK_ARGS)

lock: venv
	$(UV_COMPILE) requirements.txt -o requirements.lock
	$(UV_COMPILE) requirements-dev.txt -c requirements.lock -o requirements-dev.lock
	$(UV_COMPILE) requirements-exporter.txt -o requirements-exporter.lock

clean:
	rm -rf $(VENV) .venv-exporter .run .pytest_cache .mypy_cache .ruff_cache

BENCH_ARGS ?=

# End-to-end benchmark: its own database, Redis index and Mosquitto; results in bench-results/.
bench: setup
	$(PY) -m bench $(BENCH_ARGS)

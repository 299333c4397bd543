# `make run` runs the service, `make test` passes the tests; both set everything up from nothing.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test lint setup venv exporter-env services migrate clean bench

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

clean:
	rm -rf $(VENV) .venv-exporter .run .pytest_cache .mypy_cache .ruff_cache

BENCH_ARGS ?=

# End-to-end benchmark: its own database, Redis index and Mosquitto; results in bench-results/.
bench: setup
	$(PY) -m bench $(BENCH_ARGS)

# `make run` runs the service, `make test` passes the tests; both set everything up from nothing.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test lint setup venv services migrate clean

run: setup migrate
	$(VENV)/bin/honcho start -f Procfile

test: setup
	scripts/ensure-compose-validator.sh
	$(VENV)/bin/pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy .

setup: venv services

venv:
	scripts/python-env.sh

services:
	scripts/services.sh

migrate: setup
	$(PY) -m migrations

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache

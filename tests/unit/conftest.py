"""Fixtures for the unit tests of settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest_tasks.settings import Settings

VARIABLES = [f.alias for f in Settings.model_fields.values() if f.alias]


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """None of our variables set (in either case), and a working directory without a `.env`."""
    monkeypatch.chdir(tmp_path)
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)

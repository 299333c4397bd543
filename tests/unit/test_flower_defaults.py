"""Flower reads its basic auth from the environment only: the settings hand it over."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest_tasks.app import set_flower_defaults
from ingest_tasks.settings import Settings

pytestmark = pytest.mark.usefixtures("clean_environment")  # tests/unit/conftest.py
FLOWER_VARIABLES = ("FLOWER_BASIC_AUTH", "FLOWER_BASIC_AUTH_FILE", "FLOWER_MAX_TASKS")


@pytest.fixture(autouse=True)
def _restore_flower_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """set_flower_defaults writes os.environ itself: monkeypatch restores what each test changed."""
    for name in FLOWER_VARIABLES:
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)


def test_basic_auth_from_a_file_reaches_flower_and_the_settings_still_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = tmp_path / "flower_auth"
    secret.write_text("ops:s3cret\n", encoding="utf-8")
    monkeypatch.setenv("FLOWER_BASIC_AUTH_FILE", str(secret))
    set_flower_defaults(Settings())
    assert os.environ["FLOWER_BASIC_AUTH"] == "ops:s3cret"
    assert Settings().flower_basic_auth == "ops:s3cret"  # not "both set"


def test_an_operators_own_flower_basic_auth_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "mine:pw")
    set_flower_defaults(Settings())
    assert os.environ["FLOWER_BASIC_AUTH"] == "mine:pw"

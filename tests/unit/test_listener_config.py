"""The listener's process wires its settings into the MQTT subscriber."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest_tasks.settings import Settings
from listener.__main__ import subscriber_config

pytestmark = pytest.mark.usefixtures("clean_environment")  # tests/unit/conftest.py


def test_a_login_from_mqtt_url_file_is_read_again_at_every_reconnect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    login = tmp_path / "mqtt_url"
    login.write_text("mqtt://ingest:first@broker:1883\n", encoding="utf-8")
    monkeypatch.setenv("MQTT_URL_FILE", str(login))
    config = subscriber_config(Settings())
    assert config.url_file == str(login)  # the subscriber re-reads this file before each connect
    assert (config.address.username, config.address.password) == ("ingest", "first")

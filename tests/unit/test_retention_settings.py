"""TELEMETRY_RETENTION_DAYS: off (0) by default, whole days from 0 to 36,500, and a bad value stops
the process at start with one line naming it. Runs in an empty working directory with none of the
variables set, as tests/unit/test_settings.py does."""

from __future__ import annotations

import pytest

from ingest_tasks.settings import Settings, load_settings

pytestmark = pytest.mark.usefixtures("clean_environment")  # tests/unit/conftest.py


def test_retention_is_off_by_default() -> None:
    assert Settings().telemetry_retention_days == 0


@pytest.mark.parametrize(("value", "days"), [("0", 0), ("1", 1), ("90", 90), (" 30 ", 30), ("36500", 36_500)])
def test_a_whole_number_of_days_is_taken(monkeypatch: pytest.MonkeyPatch, value: str, days: int) -> None:
    monkeypatch.setenv("TELEMETRY_RETENTION_DAYS", value)
    assert Settings().telemetry_retention_days == days


@pytest.mark.parametrize("value", [
    pytest.param("-1", id="negative"),
    pytest.param("1.5", id="a fraction"),
    pytest.param("30d", id="a unit"),
    pytest.param("", id="empty"),
    pytest.param("36501", id="past a century"),
])
def test_a_bad_value_stops_the_process_with_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str,
) -> None:
    monkeypatch.setenv("TELEMETRY_RETENTION_DAYS", value)
    with pytest.raises(SystemExit) as caught:
        load_settings()
    err = capsys.readouterr().err
    assert caught.value.code == 2
    assert len(err.splitlines()) == 1
    assert err.startswith("invalid setting TELEMETRY_RETENTION_DAYS: ")

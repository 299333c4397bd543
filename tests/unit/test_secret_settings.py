"""Secret settings: read from `<VARIABLE>_FILE` when asked, and never shown in an error, whatever they hold.

Every test runs in an empty working directory with none of the variables set. The errors are
read where an operator reads them: the one line `load_settings` prints before it exits.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest_tasks.settings import ENCODE_HINT, SECRET_FILE_MAX_BYTES, SECRET_VARIABLES, Settings, load_settings

pytestmark = pytest.mark.usefixtures("clean_environment")  # tests/unit/conftest.py
FIELDS = {"MQTT_URL": "mqtt_url", "CELERY_BROKER_URL": "celery_broker_url", "DATABASE_URL": "database_url",
          "FLOWER_BASIC_AUTH": "flower_basic_auth"}
GOOD = {"MQTT_URL": "mqtt://svc:pw%2F1@broker:1884", "CELERY_BROKER_URL": "redis://:pw%2F1@redis:6380/2",
        "DATABASE_URL": "postgresql://u:pw%2F1@db:5433/x", "FLOWER_BASIC_AUTH": "admin:pw/1"}


def exit_line(capsys: pytest.CaptureFixture[str]) -> str | None:
    """The line `load_settings` prints as it exits, or None when the settings are valid."""
    try:
        load_settings()
    except SystemExit as exited:
        assert exited.code == 2
        out, err = capsys.readouterr()
        assert out == ""
        (line,) = err.splitlines()
        return line
    assert capsys.readouterr() == ("", "")
    return None


# --- <VARIABLE>_FILE -------------------------------------------------------------------------------


@pytest.mark.parametrize("variable", SECRET_VARIABLES)
@pytest.mark.parametrize("ending", ["", "\n", "\r\n"], ids=["no newline", "newline", "CRLF"])
def test_a_secret_is_read_from_the_file_its_FILE_variable_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, ending: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(GOOD[variable] + ending, newline="")
    monkeypatch.setenv(f"{variable}_FILE", str(secret))
    assert getattr(Settings(), FIELDS[variable]) == GOOD[variable]


def test_a_FILE_variable_in_dotenv_is_read_too(tmp_path: Path) -> None:
    (tmp_path / "db-url").write_text(GOOD["DATABASE_URL"] + "\n")
    (tmp_path / ".env").write_text(f"DATABASE_URL_FILE={tmp_path / 'db-url'}\n")
    assert Settings().database_url == GOOD["DATABASE_URL"]


def test_the_parsed_mqtt_address_comes_from_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "mqtt-url").write_text("mqtts://svc:p%40ss%2Fw@broker\n")
    monkeypatch.setenv("MQTT_URL_FILE", str(tmp_path / "mqtt-url"))
    address = Settings().mqtt
    assert (address.host, address.port, address.tls, address.username, address.password) == (
        "broker", 8883, True, "svc", "p@ss/w")


@pytest.mark.parametrize("variable", SECRET_VARIABLES)
def test_setting_a_secret_and_its_FILE_is_one_line_naming_both(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, variable: str
) -> None:
    (tmp_path / "secret").write_text(GOOD[variable])
    monkeypatch.setenv(variable, GOOD[variable])
    monkeypatch.setenv(f"{variable}_FILE", str(tmp_path / "secret"))
    assert exit_line(capsys) == f"invalid setting {variable} and {variable}_FILE are both set: set only one"


def test_an_empty_FILE_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", GOOD["DATABASE_URL"])
    monkeypatch.setenv("DATABASE_URL_FILE", "")
    assert Settings().database_url == GOOD["DATABASE_URL"]


def unreadable(tmp_path: Path, kind: str) -> tuple[str, str]:
    """A path that cannot be read as a secret, and the reason the error gives."""
    if kind == "missing":
        return str(tmp_path / "nope"), "cannot read the file it names (No such file or directory)"
    if kind == "directory":
        return str(tmp_path), "cannot read the file it names (Is a directory)"
    path = tmp_path / kind
    if kind == "not utf-8":
        path.write_bytes(b"postgresql://u:\xff\xfe@db/x\n")
        return str(path), "the file it names is not UTF-8 text"
    path.write_bytes(b"postgresql://u:" + b"x" * SECRET_FILE_MAX_BYTES + b"@db/x")
    return str(path), f"the file it names is larger than {SECRET_FILE_MAX_BYTES} bytes"


@pytest.mark.parametrize("variable", SECRET_VARIABLES)
@pytest.mark.parametrize("kind", ["missing", "directory", "not utf-8", "too large"])
def test_an_unreadable_FILE_is_one_line_naming_the_variable_without_the_content(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, variable: str,
    kind: str,
) -> None:
    path, reason = unreadable(tmp_path, kind)
    monkeypatch.setenv(f"{variable}_FILE", path)
    line = exit_line(capsys)
    assert line == f"invalid setting {variable}_FILE: {reason}"


def test_a_FILE_variable_holding_the_secret_itself_is_not_shown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The likely mistake: the value where its path should be. The path is not shown either.
    monkeypatch.setenv("DATABASE_URL_FILE", "postgresql://u:s3cret-pw@db/x")
    assert exit_line(capsys) == (
        "invalid setting DATABASE_URL_FILE: cannot read the file it names (No such file or directory)")


def test_a_malformed_secret_from_a_file_says_where_it_came_from_and_not_what_it_holds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "mqtt-url").write_text("mqtt://svc:s3cr/et@broker\n")
    monkeypatch.setenv("MQTT_URL_FILE", str(tmp_path / "mqtt-url"))
    assert exit_line(capsys) == (f"invalid setting MQTT_URL: the port is not a number from 0 to 65535 "
                                 f"({ENCODE_HINT}) (read from MQTT_URL_FILE)")


# --- no part of a secret in any error ----------------------------------------------------------------

SPECIAL = "/:@?#%"
# Letters of every script, digits, punctuation, symbols, spaces: what a password manager makes, and more.
# (No control characters: an environment variable cannot hold NUL, and a newline ends a _FILE's value.)
password_chars = st.one_of(st.sampled_from(SPECIAL), st.characters(exclude_categories=("Cc", "Cs")))
passwords = st.text(password_chars, min_size=1, max_size=24)

# Each secret written into its variable as an operator might: unencoded, in a right or wrong URL.
TEMPLATES = {
    "MQTT_URL": ["mqtt://svc:{pw}@broker:1883", "mqtts://svc:{pw}@broker", "mqtt://{pw}@broker",
                 "http://svc:{pw}@broker", "mqtt://svc:{pw}@", "mqtt://svc:{pw}@broker:{pw}"],
    "CELERY_BROKER_URL": ["redis://:{pw}@redis:6379/0", "redis://u:{pw}@redis/0", "amqp://u:{pw}@mq",
                          "redis://u:{pw}@redis:{pw}/0"],
    "DATABASE_URL": ["postgresql://u:{pw}@db:5432/x", "postgres://{pw}@db/x", "mysql://u:{pw}@db/x",
                     "postgresql://u:{pw}@db:{pw}/x"],
    "FLOWER_BASIC_AUTH": ["{pw}", "admin:{pw}"],
}
# Every problem a secret setting can be told, in full: fixed words, with no room for a value.
SECRET_PROBLEMS = frozenset({
    "scheme must be mqtt:// or mqtts://",
    "a host is required, as in mqtt://host:1883",
    f"takes no path, query or fragment, as in mqtt://user:password@host:1883 ({ENCODE_HINT})",
    f"the port is not a number from 0 to 65535 ({ENCODE_HINT})",
    f"a port without a host ({ENCODE_HINT})",
    f"is not a URL ({ENCODE_HINT})",
    "must be a redis:// URL",
    "must be a postgresql:// URL",
    "must be user:password",
})


@contextmanager
def secret_in(variable: str, value: str, source: str, directory: Path) -> Iterator[None]:
    """`value` in the environment variable, or in a file its _FILE variable names."""
    name = variable if source == "env" else f"{variable}_FILE"
    if source == "file":
        (directory / "secret").write_text(value, encoding="utf-8")
        value = str(directory / "secret")
    os.environ[name] = value
    try:
        yield
    finally:
        del os.environ[name]


def allowed_lines(variable: str, source: str) -> set[str]:
    where = f" (read from {variable}_FILE)" if source == "file" else ""
    return {f"invalid setting {variable}: {problem}{where}" for problem in SECRET_PROBLEMS}


@pytest.mark.parametrize("source", ["env", "file"])
@pytest.mark.parametrize("variable", SECRET_VARIABLES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=passwords, template=st.integers(0, 5))
def test_no_part_of_a_secret_appears_in_the_error_whatever_it_contains(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, variable: str, source: str, password: str, template: int
) -> None:
    """The line printed at exit is one of the fixed sentences, whole.

    That is the sound form of "no 3-character piece of the password appears": a piece such as
    `ort` or `URL` may be in the fixed words by chance, but any part of the value added to them
    makes a line that is not one of them.
    """
    templates = TEMPLATES[variable]
    value = templates[template % len(templates)].format(pw=password)
    with secret_in(variable, value, source, tmp_path):
        line = exit_line(capsys)
    if line is not None:
        assert line in allowed_lines(variable, source)


@pytest.mark.parametrize(("variable", "value", "problem"), [
    pytest.param("MQTT_URL", "mqtt://svc:s3cr/et@broker", "the port is not a number", id="the issue's case"),
    pytest.param("MQTT_URL", "mqtt://svc:s3cr#et@broker:1883", "the port is not a number", id="# in MQTT_URL"),
    pytest.param("MQTT_URL", "mqtt://svc:1883/s3cret@broker", "takes no path", id="digits then / in MQTT_URL"),
    pytest.param("CELERY_BROKER_URL", "redis://:s3cr?et@redis:6379/0", "the port is not a number",
                 id="? in CELERY_BROKER_URL"),
    pytest.param("CELERY_BROKER_URL", "redis://:6379/s3cret@redis/0", "a port without a host",
                 id="digits then / in CELERY_BROKER_URL"),
    pytest.param("DATABASE_URL", "postgresql://u:s3cr/et@db/x", "the port is not a number",
                 id="/ in DATABASE_URL"),
    pytest.param("MQTT_URL", "mqtt://svc:s3cr@[et@broker", "is not a URL", id="unbalanced ["),
])
def test_an_unencoded_password_is_named_as_the_likely_cause_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(variable, value)
    line = exit_line(capsys)
    assert line is not None and line.startswith(f"invalid setting {variable}: {problem}")
    assert ENCODE_HINT in line
    assert "s3cr" not in line and "et@" not in line

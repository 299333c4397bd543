"""Settings: the contract's defaults, one clear line naming a malformed variable, no echoed secrets.
Every test runs in an empty working directory with none of the variables set, so neither the
developer's environment nor a stray `.env` leaks in."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ingest_tasks.settings import MqttAddress, Settings, describe_error, load_settings, parse_mqtt_url

pytestmark = pytest.mark.usefixtures("clean_environment")  # tests/unit/conftest.py
SECRET = "s3cr3t-pa55"


def settings_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    return describe_error(caught.value)


@pytest.mark.parametrize(
    ("field", "default"),
    [
        pytest.param("mqtt_url", "mqtt://localhost:1883", id="MQTT_URL"),
        pytest.param(
            "mqtt_topics",
            "traksense/+/+/+/telem,traksense/+/+/+/ack,traksense/+/+/+/event",
            id="MQTT_TOPICS",
        ),
        pytest.param("mqtt_qos", 1, id="MQTT_QOS"),
        pytest.param("mqtt_protocol", "5", id="MQTT_PROTOCOL"),
        pytest.param("mqtt_client_id", "traksense-ingest", id="MQTT_CLIENT_ID"),
        pytest.param("mqtt_shared_group", "", id="MQTT_SHARED_GROUP"),
        pytest.param("celery_broker_url", "redis://localhost:6379/0", id="CELERY_BROKER_URL"),
        pytest.param("database_url", "postgresql://postgres@localhost:5432/traksense", id="DATABASE_URL"),
        pytest.param("batch_size", 800, id="INGEST_BATCH_SIZE"),
        pytest.param("batch_ms", 250, id="INGEST_BATCH_MS"),
        pytest.param("max_payload_bytes", 65_536, id="INGEST_MAX_PAYLOAD_BYTES"),
        pytest.param("batch_bytes", 1_048_576, id="INGEST_BATCH_BYTES"),
        pytest.param("mqtt_max_packet_bytes", 1_048_576, id="MQTT_MAX_PACKET_BYTES"),
        pytest.param("max_queue_bytes", 268_435_456, id="INGEST_MAX_QUEUE_BYTES"),
        pytest.param("dlq_retention_days", 14, id="DLQ_RETENTION_DAYS"),
        pytest.param("metrics_port", 9100, id="METRICS_PORT"),
        pytest.param("worker_metrics_port", 9101, id="WORKER_METRICS_PORT"),
        pytest.param("flower_basic_auth", "", id="FLOWER_BASIC_AUTH"),
        pytest.param("log_level", "INFO", id="LOG_LEVEL"),
        pytest.param("log_format", "text", id="LOG_FORMAT"),
    ],
)
def test_each_default_is_the_contracts(field: str, default: object) -> None:
    assert getattr(Settings(), field) == default


def test_the_default_topics_are_the_three_kinds() -> None:
    assert Settings().topic_filters == [
        "traksense/+/+/+/telem",
        "traksense/+/+/+/ack",
        "traksense/+/+/+/event",
    ]


def test_the_default_broker_is_plain_mqtt_on_localhost() -> None:
    assert Settings().mqtt == MqttAddress("localhost", 1883, False, None, None)


@pytest.mark.parametrize(
    ("variable", "value", "field", "parsed"),
    [
        pytest.param("MQTT_QOS", "0", "mqtt_qos", 0, id="qos 0"),
        pytest.param("MQTT_QOS", "1", "mqtt_qos", 1, id="qos 1 as text"),
        pytest.param("MQTT_PROTOCOL", "3.1.1", "mqtt_protocol", "3.1.1", id="MQTT 3.1.1"),
        pytest.param("MQTT_PROTOCOL", " 5 ", "mqtt_protocol", "5", id="MQTT 5 with spaces"),
        pytest.param("INGEST_BATCH_BYTES", "65536", "batch_bytes", 65_536, id="batch bytes"),
        pytest.param("MQTT_MAX_PACKET_BYTES", "268435455", "mqtt_max_packet_bytes", 268_435_455,
                     id="MQTT's largest packet"),
        pytest.param("INGEST_MAX_QUEUE_BYTES", "1000000", "max_queue_bytes", 1_000_000, id="queue bytes"),
        pytest.param("INGEST_BATCH_SIZE", "50", "batch_size", 50, id="batch size"),
        pytest.param("INGEST_BATCH_MS", "1000", "batch_ms", 1000, id="batch ms"),
        pytest.param("LOG_LEVEL", "debug", "log_level", "DEBUG", id="log level any case"),
        pytest.param("LOG_FORMAT", "JSON", "log_format", "json", id="log format any case"),
        pytest.param("MQTT_SHARED_GROUP", "ingest", "mqtt_shared_group", "ingest", id="shared group"),
        pytest.param(
            "DATABASE_URL", "postgres://u:p@db/x", "database_url", "postgres://u:p@db/x", id="postgres scheme"
        ),
        pytest.param(
            "CELERY_BROKER_URL",
            "rediss://r:6380/1",
            "celery_broker_url",
            "rediss://r:6380/1",
            id="redis over TLS",
        ),
    ],
)
def test_a_variable_overrides_its_default(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str, parsed: object
) -> None:
    monkeypatch.setenv(variable, value)
    assert getattr(Settings(), field) == parsed


def test_topic_filters_are_split_on_commas_and_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQTT_TOPICS", " a/+/telem , ,b/#,")
    assert Settings().topic_filters == ["a/+/telem", "b/#"]


def test_a_dotenv_file_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("INGEST_BATCH_SIZE=5\nMQTT_URL=mqtts://broker\n")
    settings = Settings()
    assert (settings.batch_size, settings.mqtt.port) == (5, 8883)


def test_the_environment_wins_over_the_dotenv_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("INGEST_BATCH_SIZE=5\n")
    monkeypatch.setenv("INGEST_BATCH_SIZE", "7")
    assert Settings().batch_size == 7


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        pytest.param("MQTT_QOS", "3", "Input should be 0 or 1 (got '3')", id="qos 3"),
        pytest.param("MQTT_QOS", "abc", "Input should be 0 or 1 (got 'abc')", id="qos not a number"),
        pytest.param("MQTT_QOS", "-1", "Input should be 0 or 1", id="negative qos"),
        pytest.param("MQTT_PROTOCOL", "3.1", "Input should be '5' or '3.1.1' (got '3.1')", id="MQTT 3.1"),
        pytest.param("MQTT_PROTOCOL", "v5", "Input should be '5' or '3.1.1' (got 'v5')", id="protocol v5"),
        pytest.param("MQTT_PROTOCOL", "", "Input should be '5' or '3.1.1'", id="empty protocol"),
        pytest.param("INGEST_BATCH_BYTES", "0", "greater than or equal to 1", id="batch bytes 0"),
        pytest.param("INGEST_MAX_QUEUE_BYTES", "0", "greater than or equal to 1", id="queue bytes 0"),
        pytest.param("MQTT_MAX_PACKET_BYTES", "100", "greater than or equal to 1024", id="packet too small"),
        pytest.param("MQTT_MAX_PACKET_BYTES", "268435456", "less than or equal to 268435455",
                     id="packet larger than MQTT allows"),
        pytest.param("INGEST_BATCH_SIZE", "abc", "valid integer", id="batch size not a number"),
        pytest.param("INGEST_BATCH_SIZE", "0", "greater than or equal to 1 (got '0')", id="batch size 0"),
        pytest.param("INGEST_BATCH_SIZE", "12.5", "valid integer", id="batch size fraction"),
        pytest.param("INGEST_BATCH_MS", "0", "greater than or equal to 1", id="batch ms 0"),
        pytest.param(
            "INGEST_MAX_PAYLOAD_BYTES", "-5", "greater than or equal to 1", id="negative payload limit"
        ),
        pytest.param("DLQ_RETENTION_DAYS", "-1", "greater than or equal to 0", id="negative retention"),
        pytest.param("INGEST_RESEND_AFTER_S", "0", "greater than or equal to 1", id="resend after 0 s"),
        pytest.param("METRICS_PORT", "70000", "less than or equal to 65535", id="port out of range"),
        pytest.param("MQTT_URL", "http://x", "scheme must be mqtt:// or mqtts://", id="MQTT_URL http"),
        pytest.param("MQTT_URL", "mqtt://", "a host is required", id="MQTT_URL without host"),
        pytest.param("MQTT_URL", "localhost:1883", "scheme must be", id="MQTT_URL without scheme"),
        pytest.param("MQTT_URL", "mqtt://h:notaport", "the port is not a number from 0 to 65535",
                     id="MQTT_URL bad port"),
        pytest.param("MQTT_URL", "mqtt://h:1883/x", "takes no path", id="MQTT_URL with a path"),
        pytest.param("CELERY_BROKER_URL", "redis://h:99999/0", "the port is not a number", id="broker bad port"),
        pytest.param("DATABASE_URL", "postgresql://db:x/y", "the port is not a number", id="database bad port"),
        pytest.param("MQTT_TOPICS", " , ", "at least one topic filter is required", id="no topics"),
        pytest.param("MQTT_CLIENT_ID", "", "at least 1 character", id="empty client id"),
        pytest.param("CELERY_BROKER_URL", "amqp://h", "must be a redis:// URL", id="broker not redis"),
        pytest.param(
            "DATABASE_URL", "mysql://h/db", "must be a postgresql:// URL", id="database not postgres"
        ),
        pytest.param("FLOWER_BASIC_AUTH", "admin", "must be user:password", id="basic auth without colon"),
        pytest.param("LOG_LEVEL", "loud", "Input should be 'DEBUG'", id="unknown log level"),
        pytest.param("LOG_FORMAT", "xml", "Input should be 'text' or 'json'", id="unknown log format"),
    ],
)
def test_a_malformed_value_is_an_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    line = settings_error(monkeypatch, **{variable: value})
    assert line.startswith(f"invalid setting {variable}: ")
    assert problem in line
    assert "\n" not in line


def test_every_malformed_variable_is_named_on_the_same_line(monkeypatch: pytest.MonkeyPatch) -> None:
    line = settings_error(monkeypatch, MQTT_QOS="3", INGEST_BATCH_SIZE="abc")
    assert "MQTT_QOS: " in line
    assert "INGEST_BATCH_SIZE: " in line
    assert "\n" not in line


def test_load_settings_exits_2_with_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MQTT_QOS", "3")
    with pytest.raises(SystemExit) as caught:
        load_settings()
    out, err = capsys.readouterr()
    assert caught.value.code == 2
    assert out == ""
    assert err.splitlines() == ["invalid setting MQTT_QOS: Input should be 0 or 1 (got '3')"]


def test_load_settings_names_a_malformed_variable_from_dotenv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".env").write_text("INGEST_BATCH_SIZE=abc\n")
    with pytest.raises(SystemExit) as caught:
        load_settings()
    err = capsys.readouterr().err
    assert caught.value.code == 2
    assert len(err.splitlines()) == 1
    assert err.startswith("invalid setting INGEST_BATCH_SIZE: ")


def test_load_settings_returns_the_settings_when_all_is_well(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_settings().batch_size == 800
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("MQTT_URL", f"http://user:{SECRET}@broker", id="MQTT_URL wrong scheme"),
        pytest.param("MQTT_URL", f"mqtt://user:{SECRET}@", id="MQTT_URL without host"),
        pytest.param("MQTT_URL", f"mqtt://user:{SECRET}@broker:notaport", id="MQTT_URL bad port"),
        pytest.param("DATABASE_URL", f"mysql://user:{SECRET}@db/x", id="DATABASE_URL"),
        pytest.param("CELERY_BROKER_URL", f"amqp://user:{SECRET}@mq", id="CELERY_BROKER_URL"),
        pytest.param("FLOWER_BASIC_AUTH", SECRET, id="FLOWER_BASIC_AUTH"),
    ],
)
def test_a_password_is_never_echoed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit):
        load_settings()
    err = capsys.readouterr().err
    assert err.startswith(f"invalid setting {variable}: ")
    assert SECRET not in err


@pytest.mark.parametrize(
    ("url", "address"),
    [
        pytest.param(
            "mqtt://localhost:1883", MqttAddress("localhost", 1883, False, None, None), id="contract default"
        ),
        pytest.param("mqtt://broker", MqttAddress("broker", 1883, False, None, None), id="mqtt default port"),
        pytest.param(
            "mqtts://broker", MqttAddress("broker", 8883, True, None, None), id="mqtts default port"
        ),
        pytest.param(
            "mqtts://broker:8884", MqttAddress("broker", 8884, True, None, None), id="mqtts explicit port"
        ),
        pytest.param(
            "mqtt://ingest:pw@broker:1884",
            MqttAddress("broker", 1884, False, "ingest", "pw"),
            id="credentials",
        ),
        pytest.param(
            "mqtt://us%40er:p%3As%2Fs@broker",
            MqttAddress("broker", 1883, False, "us@er", "p:s/s"),
            id="percent-encoded credentials",
        ),
        pytest.param(
            "mqtt://ingest@broker",
            MqttAddress("broker", 1883, False, "ingest", None),
            id="user without password",
        ),
        pytest.param("mqtt://[::1]:1883", MqttAddress("::1", 1883, False, None, None), id="IPv6 host"),
    ],
)
def test_parse_mqtt_url(url: str, address: MqttAddress) -> None:
    assert parse_mqtt_url(url) == address


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        pytest.param("http://broker", "scheme must be mqtt:// or mqtts://", id="http"),
        pytest.param("tcp://broker:1883", "scheme must be", id="tcp"),
        pytest.param("broker:1883", "scheme must be", id="no scheme"),
        pytest.param("mqtt://", "a host is required", id="no host"),
        pytest.param("mqtt://broker:99999", "the port is not a number from 0 to 65535", id="port out of range"),
    ],
)
def test_parse_mqtt_url_rejects(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_mqtt_url(url)


def test_a_backoff_larger_than_its_cap_stops_the_process_naming_both(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INGEST_RETRY_BACKOFF_S", "90")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:s3cret@db/x")
    with pytest.raises(SystemExit) as exited:
        load_settings()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "INGEST_RETRY_BACKOFF_S (90.0) must not exceed INGEST_RETRY_BACKOFF_MAX_S (60.0)" in err
    assert "s3cret" not in err


@pytest.mark.parametrize("value", ["2", " 2 "])
def test_qos_2_stops_the_process_with_one_line_saying_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    monkeypatch.setenv("MQTT_QOS", value)
    with pytest.raises(SystemExit) as exited:
        load_settings()
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("invalid setting MQTT_QOS: 2 is refused: paho acknowledges a QoS 2 message (PUBREC) "
                           "before the listener has enqueued it")
    assert "a QoS 1 subscription still receives QoS 2 publishes, at QoS 1" in line


@pytest.mark.parametrize(("payload", "packet", "refused"), [
    pytest.param("65536", "65536", False, id="equal"),
    pytest.param("1048576", "2097152", False, id="payload below packet"),
    pytest.param("2000000", "1048576", True, id="payload above the default packet"),
    pytest.param("70000", "65536", True, id="payload one packet-size above"),
])
def test_the_payload_limit_must_not_exceed_the_packet_size(
    monkeypatch: pytest.MonkeyPatch, payload: str, packet: str, refused: bool
) -> None:
    monkeypatch.setenv("INGEST_MAX_PAYLOAD_BYTES", payload)
    monkeypatch.setenv("MQTT_MAX_PACKET_BYTES", packet)
    if not refused:
        assert Settings().mqtt_max_packet_bytes == int(packet)
        return
    line = settings_error(monkeypatch)
    assert line == (f"invalid setting INGEST_MAX_PAYLOAD_BYTES ({payload}) must not exceed "
                    f"MQTT_MAX_PACKET_BYTES ({packet})")

"""The one settings object, read from the environment and `.env`.

Owns the names, defaults and checks of every variable in CONTRACT.md (plus a few tuning knobs).
Refuses to start on a bad value: `load_settings` prints one line naming the variable and exits.
A secret setting (a URL with a password, FLOWER_BASIC_AUTH) may come from the file its `_FILE`
variable names; a problem with a secret is told in fixed words (`SettingProblem`), never with
any part of its value. Pure code never sees this object; entry points pass plain values down.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import SplitResult, unquote, urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TOPICS = "traksense/+/+/+/telem,traksense/+/+/+/ack,traksense/+/+/+/event"
SECRET_VARIABLES = ("MQTT_URL", "CELERY_BROKER_URL", "DATABASE_URL", "FLOWER_BASIC_AUTH")
# Read only by `python -m ingest_tasks.devices`; the services never need the broker admin.
ADMIN_SECRET_VARIABLES = ("MQTT_ADMIN_URL",)
SECRET_FILE_MAX_BYTES = 65_536  # a URL or user:password; a larger file is not the one meant
MQTT_PACKET_LIMIT = 268_435_455  # the largest Maximum Packet Size paho announces (about MQTT's 256 MiB)
ENCODE_HINT = "percent-encode / : @ ? # % in a user name or password, e.g. / as %2F"
QOS_2_REFUSED = ("2 is refused: paho acknowledges a QoS 2 message (PUBREC) before the listener has "
                 "enqueued it, so a crash could lose it; use 1 (a QoS 1 subscription still receives "
                 "QoS 2 publishes, at QoS 1)")


class SettingProblem(ValueError):
    """What is wrong with a setting, in words that hold no part of its value: safe for a secret."""


@dataclass(frozen=True)
class MqttAddress:
    """A parsed `MQTT_URL`: where the broker is and how to log in."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None


def split_url(url: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError:  # e.g. an unbalanced [ ; urllib's message quotes the URL
        raise SettingProblem(f"is not a URL ({ENCODE_HINT})") from None


def check_ports(netloc: str) -> None:
    """Each host's port (libpq takes a list, h1:5432,h2) is a number from 0 to 65535.

    urllib's own check puts the text it could not read in its message: with an unencoded / # or ?
    in a password, that text is part of the password.
    """
    for host in netloc.rpartition("@")[2].split(","):
        _, bracket, inside = host.partition("[")  # [::1]:1883; the port is read as urllib reads it
        name, colon, port = inside.partition("]")[2].partition(":") if bracket else host.partition(":")
        if colon and port and not (port.isascii() and port.isdigit() and int(port) <= 65_535):
            raise SettingProblem(f"the port is not a number from 0 to 65535 ({ENCODE_HINT})")
        if colon and not name and not bracket:
            raise SettingProblem(f"a port without a host ({ENCODE_HINT})")


def parse_mqtt_url(url: str) -> MqttAddress:
    parts = split_url(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise SettingProblem("scheme must be mqtt:// or mqtts://")
    check_ports(parts.netloc)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise SettingProblem(f"takes no path, query or fragment, as in mqtt://user:password@host:1883 "
                             f"({ENCODE_HINT})")
    if not parts.hostname:
        raise SettingProblem("a host is required, as in mqtt://host:1883")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:  # what check_ports missed; urllib's message quotes the port's text
        raise SettingProblem(f"the port is not a number from 0 to 65535 ({ENCODE_HINT})") from None
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return MqttAddress(parts.hostname, port, tls, user, password)


def check_broker_url(url: str) -> None:
    for part in url.split(";"):  # sentinel://h1:26379;sentinel://h2:26379
        parts = split_url(part)
        if parts.scheme not in ("redis", "rediss", "sentinel"):
            raise SettingProblem("must be a redis:// URL")
        check_ports(parts.netloc)


def check_database_url(url: str) -> None:
    parts = split_url(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise SettingProblem("must be a postgresql:// URL")
    check_ports(parts.netloc)


def check_admin_url(url: str) -> None:
    """The broker admin's URL (only `python -m ingest_tasks.devices` uses it): empty, or an MQTT URL
    with a user name and password."""
    if url and parse_mqtt_url(url).username is None:
        raise SettingProblem("needs the admin's user name and password, as in mqtt://admin:PASSWORD@host:1883")


def check_basic_auth(value: str) -> None:
    if value and ":" not in value:
        raise SettingProblem("must be user:password")


SECRET_CHECKS = {"mqtt_url": parse_mqtt_url, "celery_broker_url": check_broker_url,
                 "database_url": check_database_url, "flower_basic_auth": check_basic_auth,
                 "mqtt_admin_url": check_admin_url}


def read_secret_file(path: str) -> str:
    """A secret from the file `path` names, without its trailing newline."""
    try:
        with open(path, "rb") as file:
            data = file.read(SECRET_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise SettingProblem(f"cannot read the file it names ({exc.strerror or type(exc).__name__})") from None
    except ValueError:  # a NUL in the path
        raise SettingProblem("cannot read the file it names (not a valid path)") from None
    if len(data) > SECRET_FILE_MAX_BYTES:
        raise SettingProblem(f"the file it names is larger than {SECRET_FILE_MAX_BYTES} bytes")
    try:
        return data.decode().rstrip("\r\n")
    except UnicodeDecodeError:
        raise SettingProblem("the file it names is not UTF-8 text") from None


def secrets_from_files(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with each secret whose `_FILE` variable is set read from that file."""
    resolved, problems = dict(values), []
    for name in SECRET_VARIABLES + ADMIN_SECRET_VARIABLES:
        path = values.get(f"{name}_FILE")
        if not path:
            continue
        if values.get(name):
            problems.append(f"{name} and {name}_FILE are both set: set only one")
            continue
        try:
            resolved[name] = read_secret_file(path)
        except SettingProblem as exc:
            problems.append(f"{name}_FILE: {exc}")
    if problems:
        raise SettingProblem("; ".join(problems))
    return resolved


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # Each secret's `_FILE` variable comes before it: its validator looks it up (`info.data`).
    mqtt_url_file: str = Field("", alias="MQTT_URL_FILE")
    celery_broker_url_file: str = Field("", alias="CELERY_BROKER_URL_FILE")
    database_url_file: str = Field("", alias="DATABASE_URL_FILE")
    flower_basic_auth_file: str = Field("", alias="FLOWER_BASIC_AUTH_FILE")
    mqtt_admin_url_file: str = Field("", alias="MQTT_ADMIN_URL_FILE")

    mqtt_url: str = Field("mqtt://localhost:1883", alias="MQTT_URL")
    mqtt_topics: str = Field(DEFAULT_TOPICS, alias="MQTT_TOPICS")
    mqtt_qos: Literal[0, 1] = Field(1, alias="MQTT_QOS")
    mqtt_protocol: Literal["5", "3.1.1"] = Field("5", alias="MQTT_PROTOCOL")
    mqtt_client_id: str = Field("traksense-ingest", alias="MQTT_CLIENT_ID", min_length=1)
    mqtt_shared_group: str = Field("", alias="MQTT_SHARED_GROUP")
    mqtt_session_expiry_s: int = Field(86_400, alias="MQTT_SESSION_EXPIRY", ge=0)
    mqtt_ca_file: str = Field("", alias="MQTT_CA_FILE")
    mqtt_max_packet_bytes: int = Field(1_048_576, alias="MQTT_MAX_PACKET_BYTES", ge=1024, le=MQTT_PACKET_LIMIT)
    celery_broker_url: str = Field("redis://localhost:6379/0", alias="CELERY_BROKER_URL")
    database_url: str = Field("postgresql://postgres@localhost:5432/traksense", alias="DATABASE_URL")
    batch_size: int = Field(800, alias="INGEST_BATCH_SIZE", ge=1, le=50_000)
    batch_bytes: int = Field(1_048_576, alias="INGEST_BATCH_BYTES", ge=1)
    batch_ms: int = Field(250, alias="INGEST_BATCH_MS", ge=1)
    max_payload_bytes: int = Field(65_536, alias="INGEST_MAX_PAYLOAD_BYTES", ge=1)
    max_queue_chunks: int = Field(2_000, alias="INGEST_MAX_QUEUE_CHUNKS", ge=1)
    max_queue_bytes: int = Field(268_435_456, alias="INGEST_MAX_QUEUE_BYTES", ge=1)
    retry_max: int = Field(10, alias="INGEST_RETRY_MAX", ge=0)
    retry_backoff_s: float = Field(1.0, alias="INGEST_RETRY_BACKOFF_S", gt=0)
    retry_backoff_max_s: float = Field(60.0, alias="INGEST_RETRY_BACKOFF_MAX_S", gt=0)
    visibility_timeout_s: int = Field(600, alias="CELERY_VISIBILITY_TIMEOUT", ge=10)
    resend_after_s: float = Field(30.0, alias="INGEST_RESEND_AFTER_S", ge=1)
    dlq_retention_days: int = Field(14, alias="DLQ_RETENTION_DAYS", ge=0)
    # 0 = keep telemetry forever; otherwise beat removes measurements and events older than this.
    telemetry_retention_days: int = Field(0, alias="TELEMETRY_RETENTION_DAYS", ge=0, le=36_500)
    metrics_port: int = Field(9100, alias="METRICS_PORT", ge=0, le=65535)
    worker_metrics_port: int = Field(9101, alias="WORKER_METRICS_PORT", ge=0, le=65535)
    flower_basic_auth: str = Field("", alias="FLOWER_BASIC_AUTH")
    # The broker's dynamic-security admin, for `python -m ingest_tasks.devices` only.
    mqtt_admin_url: str = Field("", alias="MQTT_ADMIN_URL")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", alias="LOG_LEVEL"
    )
    log_format: Literal["text", "json"] = Field("text", alias="LOG_FORMAT")

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, values: Any) -> Any:
        return secrets_from_files(values) if isinstance(values, dict) else values

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _case_insensitive(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if value.lower() in ("debug", "info", "warning", "error", "critical") else value.lower()

    @field_validator("mqtt_protocol", mode="before")
    @classmethod
    def _protocol_from_text(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value

    @field_validator("mqtt_qos", mode="before")
    @classmethod
    def _qos_from_text(cls, value: object) -> object:
        text = value.strip() if isinstance(value, str) else value
        if text in ("2", 2):
            raise ValueError(QOS_2_REFUSED)
        # The environment gives "1", which a Literal[0, 1] does not coerce.
        return int(text) if text in ("0", "1") else value

    @field_validator(*SECRET_CHECKS)
    @classmethod
    def _valid_secret(cls, value: str, info: ValidationInfo) -> str:
        name = info.field_name or ""
        try:
            SECRET_CHECKS[name](value)
        except SettingProblem as exc:
            if info.data.get(f"{name}_file"):
                raise SettingProblem(f"{exc} (read from {name.upper()}_FILE)") from None
            raise
        return value

    @field_validator("mqtt_topics")
    @classmethod
    def _valid_topics(cls, value: str) -> str:
        if not [t for t in value.split(",") if t.strip()]:
            raise ValueError("at least one topic filter is required")
        return value

    @model_validator(mode="after")
    def _backoff_in_order(self) -> Settings:
        if self.retry_backoff_s > self.retry_backoff_max_s:
            raise ValueError(
                f"INGEST_RETRY_BACKOFF_S ({self.retry_backoff_s}) must not exceed "
                f"INGEST_RETRY_BACKOFF_MAX_S ({self.retry_backoff_max_s})"
            )
        return self

    @model_validator(mode="after")
    def _payload_fits_a_packet(self) -> Settings:
        # A payload between the two must still reach the listener, to be dead-lettered.
        if self.max_payload_bytes > self.mqtt_max_packet_bytes:
            raise ValueError(
                f"INGEST_MAX_PAYLOAD_BYTES ({self.max_payload_bytes}) must not exceed "
                f"MQTT_MAX_PACKET_BYTES ({self.mqtt_max_packet_bytes})"
            )
        return self

    @property
    def mqtt(self) -> MqttAddress:
        return parse_mqtt_url(self.mqtt_url)

    @property
    def topic_filters(self) -> list[str]:
        return [t.strip() for t in self.mqtt_topics.split(",") if t.strip()]


# Variables that may carry a password (or name the file that does) are never echoed back.
SECRET_ALIASES = frozenset(
    name + suffix for name in SECRET_VARIABLES + ADMIN_SECRET_VARIABLES for suffix in ("", "_FILE")
)


def describe_error(exc: ValidationError) -> str:
    """One line naming the variable(s) that are wrong and why."""
    return "invalid setting " + "; ".join(map(describe_problem, exc.errors()))


def describe_problem(err: ErrorDetails) -> str:
    message = err["msg"].removeprefix("Value error, ")
    if not err["loc"]:  # a rule across variables, or a _FILE: its message names them, never a value
        return message
    alias = str(err["loc"][0])  # errors are located by alias (the variable's name)
    if alias not in SECRET_ALIASES:
        return f"{alias}: {message} (got {err.get('input')!r})"
    # Only our own words: a library's message may quote the value (urllib quotes a bad port).
    problem = err.get("ctx", {}).get("error")
    return f"{alias}: {problem if isinstance(problem, SettingProblem) else 'is not valid (' + err['type'] + ')'}"


def load_settings() -> Settings:
    """Build the settings at an entry point; on a bad value, print one line and exit(2)."""
    try:
        return Settings()
    except ValidationError as exc:
        print(describe_error(exc), file=sys.stderr)
        raise SystemExit(2) from None

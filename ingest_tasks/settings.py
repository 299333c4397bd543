"""The one settings object, read from the environment and `.env`.

Owns the names, defaults and checks of every variable in CONTRACT.md (plus a few tuning knobs).
Refuses to start on a bad value: `load_settings` prints one line naming the variable and exits.
Pure code never sees this object; entry points pass plain values down.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TOPICS = "traksense/+/+/+/telem,traksense/+/+/+/ack,traksense/+/+/+/event"


@dataclass(frozen=True)
class MqttAddress:
    """A parsed `MQTT_URL`: where the broker is and how to log in."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None


def parse_mqtt_url(url: str) -> MqttAddress:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError("scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError("a host is required, as in mqtt://host:1883")
    tls = parts.scheme == "mqtts"
    port = parts.port or (8883 if tls else 1883)
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return MqttAddress(parts.hostname, port, tls, user, password)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    mqtt_url: str = Field("mqtt://localhost:1883", alias="MQTT_URL")
    mqtt_topics: str = Field(DEFAULT_TOPICS, alias="MQTT_TOPICS")
    mqtt_qos: Literal[0, 1, 2] = Field(1, alias="MQTT_QOS")
    mqtt_client_id: str = Field("traksense-ingest", alias="MQTT_CLIENT_ID", min_length=1)
    mqtt_shared_group: str = Field("", alias="MQTT_SHARED_GROUP")
    mqtt_session_expiry_s: int = Field(86_400, alias="MQTT_SESSION_EXPIRY", ge=0)
    mqtt_ca_file: str = Field("", alias="MQTT_CA_FILE")
    celery_broker_url: str = Field("redis://localhost:6379/0", alias="CELERY_BROKER_URL")
    database_url: str = Field(
        "postgresql://postgres@localhost:5432/traksense", alias="DATABASE_URL"
    )
    batch_size: int = Field(800, alias="INGEST_BATCH_SIZE", ge=1, le=50_000)
    batch_ms: int = Field(250, alias="INGEST_BATCH_MS", ge=1)
    max_payload_bytes: int = Field(65_536, alias="INGEST_MAX_PAYLOAD_BYTES", ge=1)
    max_queue_chunks: int = Field(2_000, alias="INGEST_MAX_QUEUE_CHUNKS", ge=1)
    retry_max: int = Field(10, alias="INGEST_RETRY_MAX", ge=0)
    retry_backoff_s: float = Field(1.0, alias="INGEST_RETRY_BACKOFF_S", gt=0)
    retry_backoff_max_s: float = Field(60.0, alias="INGEST_RETRY_BACKOFF_MAX_S", gt=0)
    visibility_timeout_s: int = Field(600, alias="CELERY_VISIBILITY_TIMEOUT", ge=10)
    resend_after_s: float = Field(30.0, alias="INGEST_RESEND_AFTER_S", ge=1)
    dlq_retention_days: int = Field(14, alias="DLQ_RETENTION_DAYS", ge=0)
    metrics_port: int = Field(9100, alias="METRICS_PORT", ge=0, le=65535)
    worker_metrics_port: int = Field(9101, alias="WORKER_METRICS_PORT", ge=0, le=65535)
    flower_basic_auth: str = Field("", alias="FLOWER_BASIC_AUTH")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", alias="LOG_LEVEL"
    )
    log_format: Literal["text", "json"] = Field("text", alias="LOG_FORMAT")

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _case_insensitive(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if value.lower() in ("debug", "info", "warning", "error", "critical") else value.lower()

    @field_validator("mqtt_qos", mode="before")
    @classmethod
    def _qos_from_text(cls, value: object) -> object:
        # The environment gives "1", which a Literal[0, 1, 2] does not coerce.
        return int(value) if isinstance(value, str) and value.strip() in ("0", "1", "2") else value

    @field_validator("mqtt_url")
    @classmethod
    def _valid_mqtt_url(cls, value: str) -> str:
        parse_mqtt_url(value)
        return value

    @field_validator("mqtt_topics")
    @classmethod
    def _valid_topics(cls, value: str) -> str:
        if not [t for t in value.split(",") if t.strip()]:
            raise ValueError("at least one topic filter is required")
        return value

    @field_validator("celery_broker_url")
    @classmethod
    def _valid_broker(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("redis", "rediss", "sentinel"):
            raise ValueError("must be a redis:// URL")
        return value

    @field_validator("database_url")
    @classmethod
    def _valid_database(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("flower_basic_auth")
    @classmethod
    def _valid_basic_auth(cls, value: str) -> str:
        if value and ":" not in value:
            raise ValueError("must be user:password")
        return value

    @model_validator(mode="after")
    def _backoff_in_order(self) -> Settings:
        if self.retry_backoff_s > self.retry_backoff_max_s:
            raise ValueError(
                f"INGEST_RETRY_BACKOFF_S ({self.retry_backoff_s}) must not exceed "
                f"INGEST_RETRY_BACKOFF_MAX_S ({self.retry_backoff_max_s})"
            )
        return self

    @property
    def mqtt(self) -> MqttAddress:
        return parse_mqtt_url(self.mqtt_url)

    @property
    def topic_filters(self) -> list[str]:
        return [t.strip() for t in self.mqtt_topics.split(",") if t.strip()]


# Values that may carry a password are never echoed back.
_SECRET_FIELDS = frozenset({"mqtt_url", "celery_broker_url", "database_url", "flower_basic_auth"})


def describe_error(exc: ValidationError) -> str:
    """One line naming the variable(s) that are wrong and why."""
    fields = Settings.model_fields
    by_alias = {f.alias: n for n, f in fields.items() if f.alias}
    problems = []
    for err in exc.errors():
        if not err["loc"]:  # a rule across variables: its message names them; the input is everything
            problems.append(err["msg"].removeprefix("Value error, "))
            continue
        loc = str(err["loc"][0])
        name = by_alias.get(loc, loc)  # errors are located by alias (the variable's name)
        alias = fields[name].alias if name in fields else loc
        shown = "" if name in _SECRET_FIELDS else f" (got {err.get('input')!r})"
        problems.append(f"{alias or name}: {err['msg']}{shown}")
    return "invalid setting " + "; ".join(problems)


def load_settings() -> Settings:
    """Build the settings at an entry point; on a bad value, print one line and exit(2)."""
    try:
        return Settings()
    except ValidationError as exc:
        print(describe_error(exc), file=sys.stderr)
        raise SystemExit(2) from None

"""Parsec inverters: `{"di1": 1, "di2": 0, "rssi": -68, "fw": "1.2.3", "ts": "..."}`.

di1 -> point `status` (enum RUN/STOP), di2 -> `fault` (bool), rssi -> `rssi` (float, dBm);
meta is `{"src": "parsec_v1"}` plus `fw` when present. The v1 limits hold for what it makes: `fw`
must leave meta within `limits.MAX_META_BYTES`, and the pipeline checks `ts` as for v1.
"""

from __future__ import annotations

from typing import Any

import orjson

from ingest_tasks.errors import ValidationFailed
from ingest_tasks.limits import MAX_META_BYTES, over_limit
from ingest_tasks.models import TelemetryV1, check_value, validate

NAME = "parsec_v1"


def claims(document: dict[str, Any]) -> bool:
    return "di1" in document or "di2" in document


def _digital_input(document: dict[str, Any], key: str) -> bool:
    value = document[key]
    if value in (0, 1) and isinstance(value, int | bool):
        return bool(value)
    raise ValidationFailed(f"{key}: must be 0 or 1 (or true/false), got {value!r:.40}")


def normalize(document: dict[str, Any]) -> TelemetryV1:
    points: list[dict[str, Any]] = []
    if "di1" in document:
        status = "RUN" if _digital_input(document, "di1") else "STOP"
        points.append({"name": "status", "t": "enum", "v": status})
    if "di2" in document:
        points.append({"name": "fault", "t": "bool", "v": _digital_input(document, "di2")})
    if "rssi" in document:
        try:
            rssi = check_value("float", document["rssi"])
        except ValueError as exc:
            raise ValidationFailed(f"rssi: {exc}") from None
        points.append({"name": "rssi", "t": "float", "v": rssi, "u": "dBm"})
    normalized = {"schema": "v1", "points": points, "meta": _meta(document)}
    if "ts" in document:
        normalized["ts"] = document["ts"]
    return validate(TelemetryV1, normalized)


def _meta(document: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"src": NAME}
    if "fw" not in document:
        return meta
    if not isinstance(document["fw"], str):
        raise ValidationFailed(f"fw: must be a string, got {document['fw']!r:.40}")
    meta["fw"] = document["fw"]
    # Said here, in the device's own words: the pipeline's check of meta would name `meta`.
    size = len(orjson.dumps(meta))
    if size > MAX_META_BYTES:
        raise ValidationFailed(f"fw: makes meta {over_limit(size, 'bytes as stored', MAX_META_BYTES)}")
    return meta

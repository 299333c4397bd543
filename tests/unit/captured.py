"""Captured device payloads in tests/payloads/<vendor>/, as bytes (what the broker delivers) or as
the JSON document they hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PAYLOADS = Path(__file__).resolve().parent.parent / "payloads"


def payload_bytes(vendor: str, name: str) -> bytes:
    return (PAYLOADS / vendor / f"{name}.json").read_bytes()


def payload_document(vendor: str, name: str) -> dict[str, Any]:
    document = json.loads(payload_bytes(vendor, name))
    assert isinstance(document, dict)
    return document

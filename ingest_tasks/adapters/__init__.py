"""Vendor adapters: turn a vendor's telemetry into the normalized v1 model.

Each adapter module has the same two names: `claims(document) -> bool`, cheap and side-effect
free, and `normalize(document) -> TelemetryV1`, which raises ValidationFailed on a claimed
document it cannot map. Adapters are offered a document in the order of `ADAPTERS`.
"""

from __future__ import annotations

from typing import Any, Protocol

from ingest_tasks.adapters import parsec_v1
from ingest_tasks.errors import UnknownSchema
from ingest_tasks.models import TelemetryV1


class Adapter(Protocol):
    NAME: str

    def claims(self, document: dict[str, Any]) -> bool: ...

    def normalize(self, document: dict[str, Any]) -> TelemetryV1: ...


ADAPTERS: tuple[Adapter, ...] = (parsec_v1,)


def normalize_vendor(document: object) -> TelemetryV1:
    if isinstance(document, dict):
        for adapter in ADAPTERS:
            if adapter.claims(document):
                return adapter.normalize(document)
    names = ", ".join(a.NAME for a in ADAPTERS)
    raise UnknownSchema(
        f'telemetry is neither "schema": "v1" nor claimed by a vendor adapter ({names})'
    )

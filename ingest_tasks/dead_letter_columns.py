"""What the text columns of ingest_errors can hold, and a dead letter made to fit them.

Pure. A dead letter must always be writable: text PostgreSQL would refuse (NUL, text that is not
UTF-8, a value too long for its index) is escaped or cut, and `detail` says so; the payload bytes
are never touched.
"""

from __future__ import annotations

import msgspec

from ingest_tasks.pipeline import Rejected

# What the columns of ingest_errors hold. tenant_id is in a btree index whose entries must fit in
# about 2,700 bytes; no valid tenant comes near 1 KiB. A topic is at most 65,535 bytes in MQTT.
DEAD_TENANT_MAX_BYTES = 1024
DEAD_TOPIC_MAX_BYTES = 65_535
DEAD_DETAIL_MAX_BYTES = 8192


def writable(dead: Rejected) -> Rejected:
    """`dead` as ingest_errors can always store it: the text columns escaped and cut to fit, and
    `detail` saying what was changed. The payload bytes are never touched."""
    notes: list[str] = []
    tenant = fitted(dead.tenant, "tenant_id", DEAD_TENANT_MAX_BYTES, notes) if dead.tenant else None
    if dead.tenant == "":
        notes.append("an empty tenant_id stored as none")  # '' is no tenant to row-level security
    topic = fitted(dead.topic, "topic", DEAD_TOPIC_MAX_BYTES, notes)
    detail = fitted(dead.detail, "detail", DEAD_DETAIL_MAX_BYTES, notes)
    if not notes:
        return dead
    detail = f"{detail} [dead letter stored with changes: {'; '.join(notes)}]"
    return msgspec.structs.replace(dead, tenant=tenant, topic=topic, detail=detail)


def fitted(text: str, column: str, max_bytes: int, notes: list[str]) -> str:
    """`text` that PostgreSQL stores in `column`: NUL and text that is not UTF-8 (lone surrogates)
    written as escapes, then cut to `max_bytes` of UTF-8; what was done is added to `notes`."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
        notes.append(f"NUL in {column} written as \\x00")
    try:
        encoded = text.encode()
    except UnicodeEncodeError:
        encoded = text.encode(errors="backslashreplace")
        notes.append(f"text in {column} that is not UTF-8 written as escapes")
    if len(encoded) > max_bytes:
        notes.append(f"{column} cut from {len(encoded)} to {max_bytes} bytes")
        encoded = encoded[:max_bytes]
    return encoded.decode(errors="ignore")  # a character cut in two is dropped

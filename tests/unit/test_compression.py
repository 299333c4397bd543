"""The chunk codec: missing, the service stops at start and says what to install."""

from __future__ import annotations

import kombu.compression
import pytest

from ingest_tasks.envelope import COMPRESSION, check_compression, compress, decompress


def test_chunks_round_trip_through_the_codec() -> None:
    body = bytes(range(256)) * 64
    assert len(compress(body)) < len(body)
    assert decompress(compress(body)) == body


def test_without_the_codec_the_service_stops_at_start_naming_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check_compression()  # installed: nothing to say
    monkeypatch.delitem(kombu.compression._aliases, COMPRESSION)  # as if backports.zstd were missing
    with pytest.raises(RuntimeError, match=r"install backports\.zstd"):
        check_compression()

"""Session fixtures on TimescaleDB: a fresh database on the test-owned cluster, migrated by the
project's own migrations (ts_measure a hypertable), dropped at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.timescale.cluster import fresh_timescale_database


@pytest.fixture(scope="session")
def timescale_url() -> Iterator[str]:
    with fresh_timescale_database() as url:
        yield url

"""with_keepalives: TCP keepalives for both ends of a PostgreSQL connection, the operator's own first."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from ingest_tasks.postgres import with_keepalives

SERVER = "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"


@pytest.mark.parametrize(("dsn", "expected"), [
    pytest.param("postgresql://u:p@db:5432/traksense",
                 {"keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10",
                  "keepalives_count": "3", "options": SERVER}, id="a plain URL gets both ends"),
    pytest.param("postgresql://db/traksense?keepalives_idle=5&options=-c%20search_path%3Dx",
                 {"keepalives": "1", "keepalives_idle": "5", "keepalives_interval": "10",
                  "keepalives_count": "3", "options": f"-c search_path=x {SERVER}"},
                 id="the operator's keepalive and options are kept"),
    pytest.param("host=db dbname=traksense keepalives=0 options='-c tcp_keepalives_idle=7'",
                 {"keepalives": "0", "keepalives_idle": "30", "keepalives_interval": "10", "keepalives_count": "3",
                  "options": "-c tcp_keepalives_idle=7 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"},
                 id="keepalives turned off stay off; the server's idle is the operator's"),
])
def test_keepalives_are_added_unless_the_dsn_sets_them(dsn: str, expected: dict[str, str]) -> None:
    params = conninfo_to_dict(with_keepalives(dsn))
    assert {k: params.get(k) for k in expected} == expected


def test_the_rest_of_the_dsn_is_unchanged() -> None:
    params = conninfo_to_dict(with_keepalives("postgresql://u:s3cr%2Fet@db:6432/traksense?sslmode=require"))
    assert {k: params[k] for k in ("user", "password", "host", "port", "dbname", "sslmode")} == {
        "user": "u", "password": "s3cr/et", "host": "db", "port": "6432", "dbname": "traksense", "sslmode": "require"}

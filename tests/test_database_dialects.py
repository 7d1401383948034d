"""Warehouse dialects that cannot run here (BigQuery, Snowflake): the extras load them.

BigQuery and Snowflake are cloud services this machine cannot reach, so these tests stop at
what can be checked offline: the URL a user writes resolves, through the driver the extra
installs, to a dialect that loads. No engine is connected and no credentials are looked up
(google-auth's metadata-server probe is switched off for the whole test session).
"""

from __future__ import annotations

import os

import pytest

from sqlsentinel.database import normalize_url

os.environ.setdefault("NO_GCE_CHECK", "True")


@pytest.mark.parametrize(
    ("url", "dialect", "driver"),
    [
        ("postgresql://u@127.0.0.1/db", "postgresql", "psycopg"),
        ("postgres://u@127.0.0.1/db", "postgresql", "psycopg"),
        ("mysql://u@127.0.0.1/db", "mysql", "pymysql"),
        ("mariadb://u@127.0.0.1/db", "mariadb", "pymysql"),
        ("duckdb:///tmp/x.duckdb", "duckdb", "duckdb_engine"),
        ("bigquery://my-project/my_dataset", "bigquery", "bigquery"),
        (
            "snowflake://user:pw@account/db/schema?warehouse=wh",
            "snowflake",
            "snowflake",
        ),
    ],
)
def test_plain_schemes_load_the_extra_s_driver(url, dialect, driver):
    parsed = normalize_url(url)

    loaded = parsed.get_dialect()

    assert loaded.name == dialect
    assert loaded.driver == driver

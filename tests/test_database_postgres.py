"""The alert-query layer against the real PostgreSQL server on 127.0.0.1:5432."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import decimal
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import sqlsentinel.database as database
from sqlsentinel import values
from sqlsentinel.config import DatabaseConfig
from sqlsentinel.database import AlertDatabase
from sqlsentinel.errors import (
    QueryContractError,
    QueryError,
    QueryTimeoutError,
    ReadOnlyViolationError,
)

pytestmark = pytest.mark.postgres

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=5"


@pytest.fixture
def admin() -> Iterator[psycopg.Connection[Any]]:
    """A separate autocommit connection that sets up tables and watches the server."""
    try:
        conn = psycopg.connect(PG_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at 127.0.0.1:5432 (start it, or deselect "
            f"these tests with -m 'not postgres'): {exc}"
        )
    with conn:
        yield conn


@pytest.fixture
def table(admin: psycopg.Connection[Any]) -> Iterator[str]:
    """A table of its own for each test, with three rows; dropped afterwards."""
    name = f"sentinel_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE TABLE {name} (id serial PRIMARY KEY, amount integer)")
    admin.execute(f"INSERT INTO {name} (amount) VALUES (5), (7), (9)")
    yield name
    admin.execute(f"DROP TABLE IF EXISTS {name}")
    admin.execute(f"DROP TABLE IF EXISTS {name}_new")


@pytest.fixture
def db(admin: psycopg.Connection[Any]) -> Iterator[AlertDatabase]:
    """The database under test; `admin` first fails clearly when the server is down."""
    alert_db = AlertDatabase("pg", DatabaseConfig(url=PG_URL))
    yield alert_db
    alert_db.dispose()


def table_state(admin: psycopg.Connection[Any], name: str) -> tuple[Any, ...]:
    """Row count of the table, and which of it and `<name>_new` exist."""
    row = admin.execute(
        f"SELECT (SELECT count(*) FROM {name}), "
        "to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
        (name, f"{name}_new"),
    ).fetchone()
    assert row is not None
    return tuple(row)


def active_queries(admin: psycopg.Connection[Any], marker: str) -> int:
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
        "AND pid <> pg_backend_pid() AND query LIKE %s",
        (f"%{marker}%",),
    ).fetchone()
    assert row is not None
    return int(row[0])


def without_statement_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the read-only transaction, drop statement_timeout: only the outer cancel."""
    entry = database._DIALECTS["postgresql"]

    def prepare(conn: Any, run: Any) -> None:
        database._execute_raw(conn, "SET TRANSACTION READ ONLY")

    patched = dataclasses.replace(entry, prepare=prepare)
    monkeypatch.setitem(database._DIALECTS, "postgresql", patched)


def sleeper(marker: str) -> str:
    return f"SELECT pg_sleep(30), 'OK' AS status, '{marker}' AS marker"


class TestPostgres:
    def test_sql_reaches_the_driver_as_written(self, db: AlertDatabase) -> None:
        """'%', ':name' and '?' are not taken for parameters."""
        result = db.evaluate(
            "SELECT 'ALERT' AS status, '100%' AS x, 'abc' LIKE 'a%' AS m, "
            "':x' AS y, '?' AS q",
            5,
        )

        assert result.status == "ALERT"
        assert result.context == {"x": "100%", "m": True, "y": ":x", "q": "?"}

    def test_a_table_is_read(self, db: AlertDatabase, table: str) -> None:
        result = db.evaluate(
            "SELECT CASE WHEN sum(amount) > 20 THEN 'ALERT' ELSE 'OK' END AS status, "
            f"sum(amount) AS actual_value, 20 AS threshold FROM {table}",
            5,
        )

        assert (result.status, result.actual_value, result.threshold) == (
            "ALERT",
            21,
            20,
        )

    @pytest.mark.parametrize(
        "statement",
        [
            "INSERT INTO {t} (amount) VALUES (1)",
            "INSERT INTO {t} (amount) VALUES (1) RETURNING 'OK' AS status",
            "UPDATE {t} SET amount = 0 RETURNING 'OK' AS status",
            "DELETE FROM {t}",
            "CREATE TABLE {t}_new (x integer)",
            "DROP TABLE {t}",
            "TRUNCATE {t}",
            "ALTER TABLE {t} ADD COLUMN extra integer",
            "WITH gone AS (DELETE FROM {t} RETURNING 1) SELECT 'OK' AS status",
        ],
    )
    def test_a_change_is_refused_and_the_data_untouched(
        self,
        db: AlertDatabase,
        table: str,
        admin: psycopg.Connection[Any],
        statement: str,
    ) -> None:
        with pytest.raises(ReadOnlyViolationError) as caught:
            db.evaluate(statement.format(t=table), 5)

        assert "in a read-only transaction" in str(caught.value)
        assert table_state(admin, table) == (3, True, False)

    def test_several_statements_are_refused(
        self, db: AlertDatabase, table: str, admin: psycopg.Connection[Any]
    ) -> None:
        """A COMMIT could end the read-only transaction: only one statement is sent."""
        with pytest.raises(QueryError) as caught:
            db.evaluate(f"COMMIT; DROP TABLE {table}; SELECT 'OK' AS status", 5)

        assert "cannot insert multiple commands" in str(caught.value)
        assert table_state(admin, table) == (3, True, False)

    def test_a_slow_query_stops_at_its_statement_timeout(
        self, db: AlertDatabase, admin: psycopg.Connection[Any]
    ) -> None:
        marker = uuid.uuid4().hex

        with pytest.raises(QueryTimeoutError) as caught:
            db.evaluate(sleeper(marker), 1)

        assert "did not finish within its timeout of 1s" in str(caught.value)
        assert active_queries(admin, marker) == 0
        assert db.evaluate("SELECT 'OK' AS status", 5).status == "OK"

    async def test_the_outer_timeout_cancels_the_query(
        self, admin: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without statement_timeout, aevaluate cancels through psycopg."""
        without_statement_timeout(monkeypatch)
        db = AlertDatabase("pg", DatabaseConfig(url=PG_URL))
        marker = uuid.uuid4().hex
        try:
            with pytest.raises(QueryTimeoutError) as caught:
                await db.aevaluate(sleeper(marker), 1)
            still_running = active_queries(admin, marker)
            after = await db.aevaluate("SELECT 'OK' AS status", 5)
        finally:
            db.dispose()

        assert "timeout of 1s; it was cancelled" in str(caught.value)
        assert still_running == 0
        assert after.status == "OK"

    async def test_a_hung_query_does_not_hold_up_other_alerts(
        self, db: AlertDatabase
    ) -> None:
        with concurrent.futures.ThreadPoolExecutor(4) as executor:
            hung = asyncio.create_task(db.aevaluate(sleeper("hung"), 1, executor))
            quick = [
                await db.aevaluate(f"SELECT 'OK' AS status, {i} AS i", 5, executor)
                for i in range(5)
            ]
            hung_was_running = not hung.done()
            with pytest.raises(QueryTimeoutError):
                await hung

        assert [r.context["i"] for r in quick] == [0, 1, 2, 3, 4]
        assert hung_was_running

    def test_a_terminated_connection_heals_on_the_next_run(
        self, db: AlertDatabase, admin: psycopg.Connection[Any]
    ) -> None:
        first = db.evaluate("SELECT 'OK' AS status, pg_backend_pid() AS pid", 5)
        admin.execute("SELECT pg_terminate_backend(%s)", (first.context["pid"],))

        second = db.evaluate("SELECT 'OK' AS status, pg_backend_pid() AS pid", 5)

        assert second.status == "OK"
        assert second.context["pid"] != first.context["pid"]

    def test_a_huge_result_is_not_loaded(
        self, db: AlertDatabase, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Rows are streamed: the query ends long before its hundred million rows."""
        caplog.set_level(logging.DEBUG)
        huge = (
            "SELECT 'OK' AS status FROM generate_series(1, 1000) a, "
            "generate_series(1, 1000) b, generate_series(1, 100) c"
        )
        with pytest.raises(QueryContractError) as caught:
            db.evaluate(huge, 60)

        assert "more than one row" in str(caught.value)
        assert [
            r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
        ] == []
        assert db.evaluate("SELECT 'OK' AS status", 5).status == "OK"

    def test_no_rows_break_the_contract(self, db: AlertDatabase) -> None:
        with pytest.raises(QueryContractError) as caught:
            db.evaluate("SELECT 'OK' AS status WHERE false", 5)

        assert "returned no rows" in str(caught.value)

    def test_values_come_back_raw_and_serialize(self, db: AlertDatabase) -> None:
        result = db.evaluate(
            "SELECT 'OK' AS status, 12.30::numeric(10, 2) AS actual_value, "
            f"{10**30}::numeric AS threshold, {2**62}::bigint AS big, "
            "timestamptz '2024-03-31 01:30:00+02' AS zoned, "
            "timestamp '2024-03-31 01:30:00.123456' AS naive, "
            "date '2024-02-29' AS day, "
            "'6f1e0ac2-6a49-4bb1-9d6b-7f1f5ef0a4a2'::uuid AS id, "
            "'\\x00ff'::bytea AS blob, NULL::text AS missing",
            5,
        )

        context = result.context
        assert result.actual_value == decimal.Decimal("12.30")
        assert result.threshold == decimal.Decimal(10**30)
        assert context["big"] == 2**62
        assert context["zoned"] == dt.datetime(2024, 3, 30, 23, 30, tzinfo=dt.UTC)
        assert context["zoned"].tzinfo is not None
        assert context["naive"] == dt.datetime(2024, 3, 31, 1, 30, 0, 123456)
        assert context["day"] == dt.date(2024, 2, 29)
        assert context["id"] == uuid.UUID("6f1e0ac2-6a49-4bb1-9d6b-7f1f5ef0a4a2")
        assert context["blob"] == b"\x00\xff"
        assert context["missing"] is None
        dumped = json.loads(
            values.dumps(
                {
                    "actual_value": result.actual_value,
                    "threshold": result.threshold,
                    **context,
                }
            )
        )
        assert dumped["actual_value"] == "12.30"
        assert dumped["threshold"] == "1" + "0" * 30
        assert dumped["big"] == 2**62
        assert dt.datetime.fromisoformat(dumped["zoned"]) == context["zoned"]
        assert dumped["naive"] == "2024-03-31T01:30:00.123456"
        assert dumped["day"] == "2024-02-29"
        assert dumped["id"] == "6f1e0ac2-6a49-4bb1-9d6b-7f1f5ef0a4a2"
        assert dumped["blob"] == "base64:AP8="
        assert dumped["missing"] is None

    def test_errors_keep_the_explanation_and_hide_the_password(
        self, admin: psycopg.Connection[Any]
    ) -> None:
        """Trust authentication ignores the password, so it can be echoed back."""
        db = AlertDatabase(
            "pg",
            DatabaseConfig(url="postgresql://postgres:pw-in-url-4711@127.0.0.1/test"),
        )
        try:
            with pytest.raises(QueryError) as caught:
                db.evaluate('SELECT "pw-in-url-4711" AS status', 5)
        finally:
            db.dispose()

        assert 'column "***" does not exist' in str(caught.value)
        assert "pw-in-url-4711" not in str(caught.value)

    def test_ping_measures_a_round_trip(self, db: AlertDatabase) -> None:
        assert db.ping(5) > 0


def test_connections_use_tcp_keepalives(db: AlertDatabase) -> None:
    """A silently dead network must not hold a worker forever."""
    db.evaluate("SELECT 'OK' AS status", 5)
    engine = db._engine  # the pool created by the first query

    with engine.connect() as conn:
        params = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]

    assert params.get("keepalives") == "1"
    assert params.get("keepalives_idle") == "30"

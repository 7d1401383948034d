"""The alert-query layer against the real MariaDB server on 127.0.0.1:3306."""

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

import pymysql
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

pytestmark = pytest.mark.mysql

MYSQL_URL = "mysql://root@127.0.0.1:3306/test"


@pytest.fixture
def admin() -> Iterator[pymysql.cursors.Cursor]:
    """A separate autocommit connection that sets up tables and watches the server."""
    try:
        conn = pymysql.connect(
            host="127.0.0.1",
            port=3306,
            user="root",
            database="test",
            autocommit=True,
            connect_timeout=5,
        )
    except pymysql.err.OperationalError as exc:
        pytest.fail(
            f"MariaDB is not reachable at 127.0.0.1:3306 (start it, or deselect "
            f"these tests with -m 'not mysql'): {exc}"
        )
    with conn, conn.cursor() as cursor:
        yield cursor


@pytest.fixture
def table(admin: pymysql.cursors.Cursor) -> Iterator[str]:
    """A table of its own for each test, with three rows; dropped afterwards."""
    name = f"sentinel_{uuid.uuid4().hex[:12]}"
    admin.execute(
        f"CREATE TABLE {name} (id int AUTO_INCREMENT PRIMARY KEY, amount int)"
    )
    admin.execute(f"INSERT INTO {name} (amount) VALUES (5), (7), (9)")
    yield name
    admin.execute(f"DROP TABLE IF EXISTS {name}, {name}_new, {name}_renamed")


@pytest.fixture
def db(admin: pymysql.cursors.Cursor) -> Iterator[AlertDatabase]:
    """The database under test; `admin` first fails clearly when the server is down."""
    alert_db = AlertDatabase("maria", DatabaseConfig(url=MYSQL_URL))
    yield alert_db
    alert_db.dispose()


def table_state(admin: pymysql.cursors.Cursor, name: str) -> tuple[Any, ...]:
    """Row count of the table and the names of the tables it left behind."""
    admin.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'test' AND table_name LIKE %s ORDER BY 1",
        (f"{name}%",),
    )
    tables = [row[0] for row in admin.fetchall()]
    admin.execute(f"SELECT count(*) FROM {name}")
    row = admin.fetchone()
    assert row is not None
    return row[0], tables


def running_queries(admin: pymysql.cursors.Cursor, marker: str) -> int:
    admin.execute(
        "SELECT count(*) FROM information_schema.processlist "
        "WHERE id <> connection_id() AND command = 'Query' AND info LIKE %s",
        (f"%{marker}%",),
    )
    row = admin.fetchone()
    assert row is not None
    return int(row[0])


def without_statement_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the read-only session, drop max_statement_time: only the outer cancel."""
    entry = database._DIALECTS["mysql"]

    def prepare(conn: Any, run: Any) -> None:
        database._execute_raw(conn, "SET SESSION TRANSACTION READ ONLY")
        database._execute_raw(conn, "SET SESSION max_statement_time = 0")
        database._execute_raw(conn, "START TRANSACTION READ ONLY")

    patched = dataclasses.replace(entry, prepare=prepare)
    monkeypatch.setitem(database._DIALECTS, "mysql", patched)


def sleeper(marker: str) -> str:
    return f"SELECT SLEEP(30) AS slept, 'OK' AS status, '{marker}' AS marker"


class TestMariaDB:
    def test_sql_reaches_the_driver_as_written(self, db: AlertDatabase) -> None:
        """'%', ':name' and '?' are not taken for parameters."""
        result = db.evaluate(
            "SELECT 'ALERT' AS status, '100%' AS x, 'abc' LIKE 'a%' AS m, "
            "':x' AS y, '?' AS q",
            5,
        )

        assert result.status == "ALERT"
        assert result.context == {"x": "100%", "m": 1, "y": ":x", "q": "?"}

    def test_a_table_is_read(self, db: AlertDatabase, table: str) -> None:
        result = db.evaluate(
            "SELECT IF(sum(amount) > 20, 'ALERT', 'OK') AS status, "
            f"sum(amount) AS actual_value, 20 AS threshold FROM {table}",
            5,
        )

        assert result.status == "ALERT"
        assert result.actual_value == decimal.Decimal(21)
        assert result.threshold == 20

    @pytest.mark.parametrize(
        "statement",
        [
            "INSERT INTO {t} (amount) VALUES (1)",
            "INSERT INTO {t} (amount) VALUES (1) RETURNING 'OK' AS status",
            "UPDATE {t} SET amount = 0",
            "DELETE FROM {t}",
            # DDL commits implicitly, which would end a read-only transaction:
            # the read-only session is what stops these.
            "CREATE TABLE {t}_new (x int)",
            "CREATE TABLE {t}_new AS SELECT 'OK' AS status",
            "DROP TABLE {t}",
            "TRUNCATE TABLE {t}",
            "RENAME TABLE {t} TO {t}_renamed",
            "ALTER TABLE {t} ADD COLUMN extra int",
            "CREATE TEMPORARY TABLE {t}_new (x int)",
        ],
    )
    def test_a_change_is_refused_and_the_data_untouched(
        self,
        db: AlertDatabase,
        table: str,
        admin: pymysql.cursors.Cursor,
        statement: str,
    ) -> None:
        with pytest.raises(ReadOnlyViolationError) as caught:
            db.evaluate(statement.format(t=table), 5)

        assert "Cannot execute statement in a READ ONLY transaction" in str(
            caught.value
        )
        assert table_state(admin, table) == (3, [table])

    def test_several_statements_are_refused(
        self, db: AlertDatabase, table: str, admin: pymysql.cursors.Cursor
    ) -> None:
        with pytest.raises(QueryError) as caught:
            db.evaluate(f"COMMIT; DROP TABLE {table}; SELECT 'OK' AS status", 5)

        assert "error in your SQL syntax" in str(caught.value)
        assert table_state(admin, table) == (3, [table])

    def test_a_slow_query_stops_at_its_statement_timeout(
        self, db: AlertDatabase, admin: pymysql.cursors.Cursor
    ) -> None:
        marker = uuid.uuid4().hex

        with pytest.raises(QueryTimeoutError) as caught:
            db.evaluate(sleeper(marker), 1)

        assert "did not finish within its timeout of 1s" in str(caught.value)
        assert running_queries(admin, marker) == 0
        assert db.evaluate("SELECT 'OK' AS status", 5).status == "OK"

    async def test_the_outer_timeout_kills_the_query(
        self, admin: pymysql.cursors.Cursor, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without max_statement_time, aevaluate stops it with KILL QUERY."""
        without_statement_timeout(monkeypatch)
        db = AlertDatabase("maria", DatabaseConfig(url=MYSQL_URL))
        marker = uuid.uuid4().hex
        try:
            with pytest.raises(QueryTimeoutError) as caught:
                await db.aevaluate(sleeper(marker), 1)
            still_running = running_queries(admin, marker)
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

    def test_a_killed_connection_heals_on_the_next_run(
        self, db: AlertDatabase, admin: pymysql.cursors.Cursor
    ) -> None:
        first = db.evaluate("SELECT 'OK' AS status, CONNECTION_ID() AS id", 5)
        admin.execute(f"KILL {int(first.context['id'])}")

        second = db.evaluate("SELECT 'OK' AS status, CONNECTION_ID() AS id", 5)

        assert second.status == "OK"
        assert second.context["id"] != first.context["id"]

    def test_a_huge_result_is_not_loaded(
        self, db: AlertDatabase, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Rows are read unbuffered, and the query is stopped after the second."""
        caplog.set_level(logging.DEBUG)
        with pytest.raises(QueryContractError) as caught:
            db.evaluate("SELECT 'OK' AS status FROM seq_1_to_100000000", 60)

        assert "more than one row" in str(caught.value)
        # The kill's "interrupted" error is expected: a debug line, never an ERROR.
        assert [
            r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
        ] == []
        assert any("interrupted" in r.getMessage() for r in caplog.records)
        assert db.evaluate("SELECT 'OK' AS status", 5).status == "OK"

    def test_no_rows_break_the_contract(self, db: AlertDatabase) -> None:
        with pytest.raises(QueryContractError) as caught:
            db.evaluate("SELECT 'OK' AS status FROM DUAL WHERE 1 = 0", 5)

        assert "returned no rows" in str(caught.value)

    def test_values_come_back_raw_and_serialize(self, db: AlertDatabase) -> None:
        result = db.evaluate(
            "SELECT 'OK' AS status, CAST(12.30 AS DECIMAL(10, 2)) AS actual_value, "
            f"CAST({10**30} AS DECIMAL(40, 0)) AS threshold, "
            f"CAST({2**62} AS SIGNED) AS big, "
            "CAST('2024-03-31 01:30:00.123456' AS DATETIME(6)) AS naive, "
            "DATE '2024-02-29' AS day, "
            "CAST('6f1e0ac2-6a49-4bb1-9d6b-7f1f5ef0a4a2' AS UUID) AS id, "
            "x'00ff' AS payload, NULL AS missing",
            5,
        )

        context = result.context
        assert result.actual_value == decimal.Decimal("12.30")
        assert result.threshold == decimal.Decimal(10**30)
        assert context["big"] == 2**62
        assert context["naive"] == dt.datetime(2024, 3, 31, 1, 30, 0, 123456)
        assert context["day"] == dt.date(2024, 2, 29)
        assert context["id"] == "6f1e0ac2-6a49-4bb1-9d6b-7f1f5ef0a4a2"
        assert context["payload"] == b"\x00\xff"
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
        assert dumped["naive"] == "2024-03-31T01:30:00.123456"
        assert dumped["day"] == "2024-02-29"
        assert dumped["payload"] == "base64:AP8="
        assert dumped["missing"] is None

    def test_ping_measures_a_round_trip(self, db: AlertDatabase) -> None:
        assert db.ping(5) > 0

"""The alert-query layer: the query contract, URLs, errors, SQLite and DuckDB.

PostgreSQL and MariaDB have their own files (test_database_postgres.py and
test_database_mysql.py); these tests need no server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import decimal
import json
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from sqlalchemy.engine import URL

import sqlsentinel.database as database
from sqlsentinel import values
from sqlsentinel.config import DatabaseConfig
from sqlsentinel.database import AlertDatabase, QueryResult, normalize_url, parse_result
from sqlsentinel.errors import (
    DatabaseConnectionError,
    QueryContractError,
    QueryError,
    QueryTimeoutError,
    ReadOnlyViolationError,
)

# A recursive CTE without end: it runs until something stops it.
ENDLESS_SQLITE = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
    "SELECT 'OK' AS status, count(*) FROM c"
)
ENDLESS_DUCKDB = "SELECT 'OK' AS status, count(*) FROM range(1000000000000000)"


def open_db(url: str, **options: Any) -> AlertDatabase:
    return AlertDatabase("main", DatabaseConfig(url=url, **options))


def without_progress_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop SQLite's own time limit, leaving only the outer cancel."""
    entry = database._DIALECTS["sqlite"]

    def prepare(conn: Any, run: Any) -> None:
        entry.prepare(conn, run)
        database._driver(conn).set_progress_handler(None, 0)

    monkeypatch.setitem(
        database._DIALECTS, "sqlite", dataclasses.replace(entry, prepare=prepare)
    )


class TestQueryContract:
    def test_one_row_is_split_into_status_values_and_context(self) -> None:
        """status, actual_value and threshold are taken out; the rest is context."""
        columns = ["region", "status", "actual_value", "threshold", "orders"]

        result = parse_result(columns, [("eu", "ALERT", 12, 10, None)])

        assert result == QueryResult(
            status="ALERT",
            actual_value=12,
            threshold=10,
            context={"region": "eu", "orders": None},
        )
        assert list(result.context) == ["region", "orders"]

    def test_names_and_values_are_matched_without_case_or_spaces(self) -> None:
        """`STATUS` is the status column and ' ok\\n' is OK; context keeps names."""
        result = parse_result(
            ["STATUS", "Actual_Value", "Region"], [(" ok\n", 3, "eu")]
        )

        assert result.status == "OK"
        assert result.actual_value == 3
        assert result.threshold is None
        assert result.context == {"Region": "eu"}

    def test_status_as_bytes_is_read_as_text(self) -> None:
        """Some MySQL expressions come back as bytes; b'alert' still means ALERT."""
        assert parse_result(["status"], [(b"alert",)]).status == "ALERT"

    @pytest.mark.parametrize(
        ("columns", "rows", "message"),
        [
            (["status"], [], "returned no rows"),
            (["status"], [("OK",), ("OK",)], "returned more than one row"),
            (["status"], [(None,)], "returned NULL in `status`"),
            (
                ["status"],
                [("WARN",)],
                "returned status 'WARN'; expected 'ALERT' or 'OK'",
            ),
            (["status"], [("",)], "returned status ''"),
            (["status"], [(1,)], "returned status 1 (of type int)"),
            (["status"], [(True,)], "returned status True (of type bool)"),
            (["state", "n"], [("OK", 1)], "no `status` column (it returned: state, n)"),
            ([], [()], "no `status` column (it returned: no columns)"),
            (
                ["status", "Status"],
                [("OK", "OK")],
                "2 columns named `status` (status, Status); keep one",
            ),
            (
                ["status", "actual_value", "ACTUAL_VALUE"],
                [("OK", 1, 2)],
                "2 columns named `actual_value`",
            ),
            (["status", "id", "id"], [("OK", 1, 2)], "two columns named 'id'"),
        ],
    )
    def test_broken_results_are_refused_with_the_reason(
        self, columns: list[str], rows: list[tuple[Any, ...]], message: str
    ) -> None:
        """Nothing maps silently to OK or ALERT."""
        with pytest.raises(QueryContractError) as caught:
            parse_result(columns, rows)

        assert message in str(caught.value)

    def test_an_unknown_status_is_quoted_shortened(self) -> None:
        with pytest.raises(QueryContractError) as caught:
            parse_result(["status"], [("X" * 500,)])

        assert "'" + "X" * 40 + "'..." in str(caught.value)
        assert "X" * 41 not in str(caught.value)

    def test_a_long_column_list_is_shortened(self) -> None:
        columns = [f"c{i}" for i in range(25)]

        with pytest.raises(QueryContractError) as caught:
            parse_result(columns, [tuple(range(25))])

        assert "c0, c1," in str(caught.value)
        assert "c19, ... (5 more)" in str(caught.value)


class TestUrls:
    @pytest.mark.parametrize(
        ("url", "drivername"),
        [
            ("postgresql://u@db.example.com/x", "postgresql+psycopg"),
            ("postgres://u@db.example.com/x", "postgresql+psycopg"),
            ("mysql://u@db.example.com/x", "mysql+pymysql"),
            ("mariadb://u@db.example.com/x", "mariadb+pymysql"),
            ("postgresql+psycopg2://u@db.example.com/x", "postgresql+psycopg2"),
            ("mysql+mysqldb://u@db.example.com/x", "mysql+mysqldb"),
            ("sqlite:///a.db", "sqlite"),
            ("duckdb:///a.duckdb", "duckdb"),
        ],
    )
    def test_plain_schemes_get_the_installed_driver(
        self, url: str, drivername: str
    ) -> None:
        assert normalize_url(url).drivername == drivername

    def test_the_default_driver_is_kept_when_ours_is_missing(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Simulates a host with psycopg2 but not psycopg (not installable here)."""
        monkeypatch.setattr(database, "_installed", lambda module: module == "psycopg2")

        assert (
            normalize_url("postgresql://u@db.example.com/x").drivername == "postgresql"
        )

    def test_display_url_hides_the_password(self) -> None:
        db = open_db("postgresql://u:s3cretpw@127.0.0.1:1/x?sslmode=disable")

        assert (
            db.display_url == "postgresql+psycopg://u:***@127.0.0.1:1/x?sslmode=disable"
        )


class TestConnectionErrors:
    @pytest.mark.parametrize(
        "url",
        ["postgresql://u:s3cretpw@127.0.0.1:1/x", "mysql://u:s3cretpw@127.0.0.1:1/x"],
    )
    def test_a_closed_port_is_reported_without_the_password(self, url: str) -> None:
        db = open_db(url, connect_timeout=2)

        with pytest.raises(DatabaseConnectionError) as caught:
            db.evaluate("SELECT 'OK' AS status", 5)

        message = str(caught.value)
        assert message.startswith("cannot connect to database 'main' (")
        assert "127.0.0.1" in message
        assert "s3cretpw" not in message
        assert "s3cretpw" not in repr(caught.value.__cause__)

    @pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
    def test_a_server_that_never_answers_fails_at_the_connect_timeout(
        self, scheme: str, silent_port: int
    ) -> None:
        """The connect timeout reaches the driver: without it the attempt never ends."""
        db = open_db(
            f"{scheme}://u:s3cretpw@127.0.0.1:{silent_port}/x", connect_timeout=2
        )
        start = time.monotonic()

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            attempt = pool.submit(db.evaluate, "SELECT 'OK' AS status", 30)
            # A guard that turns a hang into a failure, not a speed requirement.
            error = attempt.exception(timeout=60)

        elapsed = time.monotonic() - start
        print(f"{scheme}: connect timeout of 2s reported after {elapsed:.2f}s")
        assert isinstance(error, DatabaseConnectionError)
        assert "s3cretpw" not in str(error)
        assert "time" in str(error).lower()

    def test_a_missing_driver_names_the_extra_to_install(self) -> None:
        db = open_db("mysql+mysqldb://u:s3cretpw@127.0.0.1:1/x")

        with pytest.raises(DatabaseConnectionError) as caught:
            db.evaluate("SELECT 'OK' AS status", 5)

        assert "pip install 'sqlsentinel[mysql]'" in str(caught.value)
        assert "s3cretpw" not in str(caught.value)

    def test_an_unknown_scheme_is_reported(self) -> None:
        # The configuration refuses this URL first; skip it to reach the database layer.
        config = DatabaseConfig.model_construct(url="nosuchdb://u@127.0.0.1:1/x")
        db = AlertDatabase("main", config)

        with pytest.raises(DatabaseConnectionError) as caught:
            db.ping(5)

        assert "no SQLAlchemy dialect is installed for 'nosuchdb'" in str(caught.value)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


# ---------------------------------------------------------------------------
# SQLite


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount INTEGER)")
        conn.executemany("INSERT INTO orders (amount) VALUES (?)", [(5,), (7,), (9,)])
    conn.close()
    return path


@pytest.fixture
def sqlite_db(sqlite_file: Path) -> Iterator[AlertDatabase]:
    db = open_db(f"sqlite:///{sqlite_file}")
    yield db
    db.dispose()


def sqlite_state(path: Path) -> tuple[int, list[str]]:
    """The row count of `orders` and the tables that exist."""
    conn = sqlite3.connect(path)
    try:
        tables = [
            r[0] for r in conn.execute("SELECT name FROM sqlite_master ORDER BY 1")
        ]
        count = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
    finally:
        conn.close()
    return count, tables


class TestSQLite:
    def test_a_query_returns_its_outcome(self, sqlite_db: AlertDatabase) -> None:
        result = sqlite_db.evaluate(
            "SELECT CASE WHEN sum(amount) > 20 THEN 'ALERT' ELSE 'OK' END AS status, "
            "sum(amount) AS actual_value, 20 AS threshold, count(*) AS orders "
            "FROM orders",
            5,
        )

        assert result == QueryResult("ALERT", 21, 20, {"orders": 3})

    def test_sql_reaches_the_driver_as_written(self, sqlite_db: AlertDatabase) -> None:
        """':x', '?' and '%' are not taken for parameters."""
        result = sqlite_db.evaluate(
            "SELECT 'ALERT' AS status, ':x' AS x, '?' AS q, '100%' AS p, "
            "'abc' LIKE 'a%' AS m",
            5,
        )

        assert result.context == {"x": ":x", "q": "?", "p": "100%", "m": 1}

    @pytest.mark.parametrize(
        "sql",
        [
            "INSERT INTO orders (amount) VALUES (1)",
            "INSERT INTO orders (amount) VALUES (1) RETURNING 'OK' AS status",
            "UPDATE orders SET amount = 0 RETURNING 'OK' AS status",
            "DELETE FROM orders",
            "CREATE TABLE intruder (x INTEGER)",
            "DROP TABLE orders",
            "ALTER TABLE orders RENAME TO renamed",
        ],
    )
    def test_a_change_is_refused_and_the_data_untouched(
        self, sqlite_db: AlertDatabase, sqlite_file: Path, sql: str
    ) -> None:
        with pytest.raises(ReadOnlyViolationError) as caught:
            sqlite_db.evaluate(sql, 5)

        assert "attempt to write a readonly database" in str(caught.value)
        assert sqlite_state(sqlite_file) == (3, ["orders"])

    def test_several_statements_are_refused(
        self, sqlite_db: AlertDatabase, sqlite_file: Path
    ) -> None:
        with pytest.raises(QueryError) as caught:
            sqlite_db.evaluate("SELECT 'OK' AS status; DROP TABLE orders", 5)

        assert "one statement at a time" in str(caught.value)
        assert sqlite_state(sqlite_file) == (3, ["orders"])

    def test_without_read_only_a_change_is_still_rolled_back(
        self, sqlite_file: Path
    ) -> None:
        db = open_db(f"sqlite:///{sqlite_file}", read_only=False)
        try:
            result = db.evaluate(
                "INSERT INTO orders (amount) VALUES (1) RETURNING 'OK' AS status", 5
            )
        finally:
            db.dispose()

        assert result.status == "OK"
        assert sqlite_state(sqlite_file) == (3, ["orders"])

    def test_a_statement_without_rows_breaks_the_contract(
        self, sqlite_file: Path
    ) -> None:
        db = open_db(f"sqlite:///{sqlite_file}", read_only=False)
        try:
            with pytest.raises(QueryContractError) as caught:
                db.evaluate("UPDATE orders SET amount = 0", 5)
        finally:
            db.dispose()

        assert "returned no result set" in str(caught.value)

    def test_an_endless_result_is_not_read_past_two_rows(
        self, sqlite_db: AlertDatabase
    ) -> None:
        endless = (
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
            "SELECT 'OK' AS status, x FROM c"
        )

        with pytest.raises(QueryContractError) as caught:
            sqlite_db.evaluate(endless, 30)

        assert "more than one row" in str(caught.value)

    def test_a_slow_query_stops_at_its_timeout(self, sqlite_db: AlertDatabase) -> None:
        with pytest.raises(QueryTimeoutError) as caught:
            sqlite_db.evaluate(ENDLESS_SQLITE, 0.2)

        assert "did not finish within its timeout of 0.2s" in str(caught.value)
        assert sqlite_db.evaluate("SELECT 'OK' AS status", 5).status == "OK"

    async def test_the_outer_timeout_interrupts_the_query(
        self, sqlite_file: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without the progress handler, interrupt() from outside ends the query."""
        without_progress_handler(monkeypatch)
        db = open_db(f"sqlite:///{sqlite_file}")
        try:
            with pytest.raises(QueryTimeoutError) as caught:
                await db.aevaluate(ENDLESS_SQLITE, 0.2)
            after = await db.aevaluate("SELECT 'OK' AS status", 5)
        finally:
            db.dispose()

        assert "timeout of 0.2s; it was cancelled" in str(caught.value)
        assert after.status == "OK"

    def test_values_come_back_raw_and_serialize(self, sqlite_db: AlertDatabase) -> None:
        result = sqlite_db.evaluate(
            f"SELECT 'OK' AS status, {2**62} AS big, x'00ff' AS blob, NULL AS missing, "
            "1.5 AS ratio, 'é' AS text",
            5,
        )

        assert result.context == {
            "big": 2**62,
            "blob": b"\x00\xff",
            "missing": None,
            "ratio": 1.5,
            "text": "é",
        }
        assert json.loads(values.dumps(result.context)) == {
            "big": 2**62,
            "blob": "base64:AP8=",
            "missing": None,
            "ratio": 1.5,
            "text": "é",
        }

    def test_ping_measures_a_round_trip(self, sqlite_db: AlertDatabase) -> None:
        assert sqlite_db.ping(5) > 0

    def test_a_bad_query_keeps_the_driver_explanation(
        self, sqlite_db: AlertDatabase
    ) -> None:
        with pytest.raises(QueryError) as caught:
            sqlite_db.evaluate("SELECT status FROM missing_table", 5)

        assert str(caught.value) == (
            "the query failed on database 'main': no such table: missing_table"
        )

    async def test_queries_run_concurrently_in_an_executor(
        self, sqlite_db: AlertDatabase
    ) -> None:
        with concurrent.futures.ThreadPoolExecutor(4) as executor:
            results = await asyncio.gather(
                *(
                    sqlite_db.aevaluate(f"SELECT 'OK' AS status, {i} AS i", 5, executor)
                    for i in range(8)
                )
            )

        assert [r.context["i"] for r in results] == list(range(8))

    @pytest.mark.parametrize("read_only", [True, False])
    @pytest.mark.parametrize("missing", ["typo.db", "no_such_dir/shop.db"])
    def test_a_missing_file_is_refused_and_not_created(
        self, tmp_path: Path, missing: str, read_only: bool
    ) -> None:
        path = tmp_path / missing
        db = open_db(f"sqlite:///{path}", read_only=read_only)

        with pytest.raises(DatabaseConnectionError) as caught:
            db.evaluate("SELECT 'OK' AS status FROM orders", 5)
        db.dispose()

        assert str(caught.value).startswith(
            f"database 'main': SQLite database file not found: {path};"
        )
        assert not path.exists()
        assert not path.parent.exists() or path.parent == tmp_path

    def test_a_file_removed_after_a_run_is_not_recreated(
        self, sqlite_file: Path
    ) -> None:
        db = open_db(f"sqlite:///{sqlite_file}")
        assert (
            db.evaluate("SELECT 'OK' AS status FROM orders LIMIT 1", 5).status == "OK"
        )
        db.dispose()
        sqlite_file.unlink()

        with pytest.raises(DatabaseConnectionError, match="file not found"):
            db.evaluate("SELECT 'OK' AS status FROM orders LIMIT 1", 5)

        assert not sqlite_file.exists()

    def test_a_relative_path_is_named_in_full(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        db = open_db("sqlite:///typo.db")

        with pytest.raises(DatabaseConnectionError) as caught:
            db.ping(5)

        assert f"file not found: {tmp_path / 'typo.db'};" in str(caught.value)
        assert not (tmp_path / "typo.db").exists()

    def test_a_path_with_uri_characters_is_opened(self, tmp_path: Path) -> None:
        """The file is opened through an SQLite URI: %, ?, # and spaces are escaped."""
        path = tmp_path / "odd 100%#na?me.db"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE t (x)")
        conn.close()
        # In the URL itself % and ? are escaped, as SQLAlchemy expects.
        db = open_db(URL.create("sqlite", database=str(path)).render_as_string())

        result = db.evaluate("SELECT 'OK' AS status, count(*) AS n FROM t", 5)
        db.dispose()

        assert result.context == {"n": 0}
        assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]

    @pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
    def test_an_in_memory_database_still_works(self, url: str) -> None:
        db = open_db(url)

        result = db.evaluate("SELECT 'ALERT' AS status, 2 AS actual_value", 5)
        db.dispose()

        assert (result.status, result.actual_value) == ("ALERT", 2)


class TestGenericDialect:
    """A database missing from the dialect table: rollback, check, outer timeout."""

    @pytest.fixture
    def generic_db(
        self, sqlite_file: Path, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[AlertDatabase]:
        monkeypatch.delitem(database._DIALECTS, "sqlite")
        db = open_db(f"sqlite:///{sqlite_file}")
        yield db
        db.dispose()

    def test_a_change_is_rolled_back(
        self, generic_db: AlertDatabase, sqlite_file: Path
    ) -> None:
        result = generic_db.evaluate(
            "INSERT INTO orders (amount) VALUES (1) RETURNING 'OK' AS status", 5
        )

        assert result.status == "OK"
        assert sqlite_state(sqlite_file) == (3, ["orders"])

    async def test_the_outer_timeout_still_applies(
        self, generic_db: AlertDatabase
    ) -> None:
        """No cancel is known, so the query finishes on its own after the timeout."""
        slow = (
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
            "WHERE x < 3000000) SELECT 'OK' AS status, count(*) FROM c"
        )
        with (
            concurrent.futures.ThreadPoolExecutor(1) as executor,
            pytest.raises(QueryTimeoutError) as caught,
        ):
            await generic_db.aevaluate(slow, 0.01, executor)

        assert "timeout of 0.01s" in str(caught.value)


# ---------------------------------------------------------------------------
# DuckDB


@pytest.fixture
def duckdb_file(tmp_path: Path) -> Path:
    path = tmp_path / "shop.duckdb"
    conn = duckdb.connect(str(path))
    conn.execute("CREATE TABLE orders (id INTEGER, amount INTEGER)")
    conn.execute("INSERT INTO orders VALUES (1, 5), (2, 7), (3, 9)")
    conn.close()
    return path


@pytest.fixture
def duckdb_db(duckdb_file: Path) -> Iterator[AlertDatabase]:
    db = open_db(f"duckdb:///{duckdb_file}")
    yield db
    db.dispose()


def duckdb_state(path: Path) -> tuple[int, list[str]]:
    # Call after dispose(): one process opens a file with one configuration at a time.
    conn = duckdb.connect(str(path), read_only=True)
    try:
        tables = [
            r[0]
            for r in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        ]
        count = conn.execute("SELECT count(*) FROM orders").fetchone()
    finally:
        conn.close()
    assert count is not None
    return count[0], tables


class TestDuckDB:
    def test_sql_reaches_the_driver_as_written(self, duckdb_db: AlertDatabase) -> None:
        result = duckdb_db.evaluate(
            "SELECT 'ALERT' AS status, ':x' AS x, '?' AS q, '100%' AS p, "
            "'abc' LIKE 'a%' AS m, sum(amount) AS actual_value FROM orders",
            5,
        )

        assert result.status == "ALERT"
        assert result.actual_value == 21
        assert result.context == {"x": ":x", "q": "?", "p": "100%", "m": True}

    @pytest.mark.parametrize(
        "sql",
        [
            "INSERT INTO orders VALUES (4, 1)",
            "INSERT INTO orders VALUES (4, 1) RETURNING 'OK' AS status",
            "UPDATE orders SET amount = 0",
            "DELETE FROM orders",
            "CREATE TABLE intruder (x INTEGER)",
            "DROP TABLE orders",
        ],
    )
    def test_a_change_is_refused_and_the_data_untouched(
        self, duckdb_db: AlertDatabase, duckdb_file: Path, sql: str
    ) -> None:
        with pytest.raises(ReadOnlyViolationError) as caught:
            duckdb_db.evaluate(sql, 5)
        duckdb_db.dispose()

        assert "read-only mode" in str(caught.value)
        assert duckdb_state(duckdb_file) == (3, ["orders"])

    def test_a_slow_query_is_interrupted_at_its_timeout(
        self, duckdb_db: AlertDatabase
    ) -> None:
        with pytest.raises(QueryTimeoutError) as caught:
            duckdb_db.evaluate(ENDLESS_DUCKDB, 0.3)

        assert "timeout of 0.3s" in str(caught.value)
        assert duckdb_db.evaluate("SELECT 'OK' AS status", 5).status == "OK"

    async def test_aevaluate_interrupts_at_its_timeout(
        self, duckdb_db: AlertDatabase
    ) -> None:
        with pytest.raises(QueryTimeoutError):
            await duckdb_db.aevaluate(ENDLESS_DUCKDB, 0.3)

        assert (await duckdb_db.aevaluate("SELECT 'OK' AS status", 5)).status == "OK"

    def test_a_huge_result_is_not_read_past_two_rows(
        self, duckdb_db: AlertDatabase
    ) -> None:
        with pytest.raises(QueryContractError) as caught:
            duckdb_db.evaluate("SELECT 'OK' AS status FROM range(100000000000)", 30)

        assert "more than one row" in str(caught.value)

    def test_values_come_back_raw_and_serialize(self, duckdb_db: AlertDatabase) -> None:
        result = duckdb_db.evaluate(
            "SELECT 'OK' AS status, 12.30::DECIMAL(10, 2) AS actual_value, "
            f"{10**30}::HUGEINT AS huge, {2**62}::BIGINT AS big, "
            "TIMESTAMPTZ '2024-03-31 01:30:00+02' AS zoned, "
            "TIMESTAMP '2024-03-31 01:30:00.123456' AS naive, "
            "DATE '2024-02-29' AS day, "
            "'6f1e0ac2-6a49-4bb1-9d6b-7f1f5ef0a4a2'::UUID AS id, "
            "'\\x00\\xff'::BLOB AS blob, "
            "NULL AS missing",
            5,
        )

        context = result.context
        assert result.actual_value == decimal.Decimal("12.30")
        assert context["huge"] == 10**30
        assert context["big"] == 2**62
        assert context["zoned"] == dt.datetime(2024, 3, 30, 23, 30, tzinfo=dt.UTC)
        assert context["naive"] == dt.datetime(2024, 3, 31, 1, 30, 0, 123456)
        assert context["day"] == dt.date(2024, 2, 29)
        assert context["id"] == uuid.UUID("6f1e0ac2-6a49-4bb1-9d6b-7f1f5ef0a4a2")
        assert context["blob"] == b"\x00\xff"
        assert context["missing"] is None
        dumped = json.loads(
            values.dumps({"actual_value": result.actual_value, **context})
        )
        assert dumped["actual_value"] == "12.30"
        assert dumped["huge"] == 10**30
        assert dt.datetime.fromisoformat(dumped["zoned"]) == context["zoned"]
        assert dumped["naive"] == "2024-03-31T01:30:00.123456"
        assert dumped["day"] == "2024-02-29"
        assert dumped["id"] == "6f1e0ac2-6a49-4bb1-9d6b-7f1f5ef0a4a2"
        assert dumped["blob"] == "base64:AP8="
        assert dumped["missing"] is None

    @pytest.mark.parametrize("read_only", [True, False])
    def test_a_missing_file_is_refused_and_not_created(
        self, tmp_path: Path, read_only: bool
    ) -> None:
        path = tmp_path / "no_such_dir" / "typo.duckdb"
        db = open_db(f"duckdb:///{path}", read_only=read_only)

        with pytest.raises(DatabaseConnectionError) as caught:
            db.evaluate("SELECT 'OK' AS status FROM orders", 5)
        db.dispose()

        assert str(caught.value).startswith(
            f"database 'main': DuckDB database file not found: {path};"
        )
        assert not path.parent.exists()

    def test_an_in_memory_database_still_works(self) -> None:
        db = open_db("duckdb:///:memory:")

        result = db.evaluate("SELECT 'OK' AS status, 42 AS actual_value", 5)
        db.dispose()

        assert (result.status, result.actual_value) == ("OK", 42)

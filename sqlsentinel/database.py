"""Run alert queries: read-only, rolled back, bounded in time, checked by the contract.

The query contract, the read-only guarantees and the timeouts of each database are
described in docs/query-contract.md. What differs between databases lives in one
table, ``_DIALECTS``; a database missing from it gets the generic behaviour
(rollback, result check and the outer timeout).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import importlib.util
import itertools
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import sqlalchemy
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import QueuePool

from sqlsentinel.config import DatabaseConfig
from sqlsentinel.errors import (
    DatabaseConnectionError,
    QueryContractError,
    QueryError,
    QueryTimeoutError,
    ReadOnlyViolationError,
)
from sqlsentinel.masking import mask, register_secret

log = logging.getLogger(__name__)

T = TypeVar("T")
Status = Literal["ALERT", "OK"]
Problem = Literal["read_only", "timeout"]
Rows = list[tuple[Any, ...]]

# Server-side timeouts fire at the timeout; the outer cancel is the backstop after this.
CANCEL_GRACE = 0.5
STATUS_VALUES: tuple[Status, ...] = ("ALERT", "OK")
_ROLES = ("status", "actual_value", "threshold")
_SHOWN_COLUMNS = 20
_SHOWN_CHARS = 40
_RAW = {"no_parameters": True}
_RAW_STREAMED = {"no_parameters": True, "stream_results": True}
_SELECT_ONE: sqlalchemy.Select[tuple[Any]] = sqlalchemy.select(
    sqlalchemy.literal_column("1")
)
_SECRET_KEY = re.compile(r"pass|secret|token|key|credential", re.IGNORECASE)


@dataclass(frozen=True)
class QueryResult:
    """The checked outcome of one alert query, with the driver's values kept raw."""

    status: Status
    actual_value: Any
    threshold: Any
    context: dict[str, Any]


# ---------------------------------------------------------------------------
# The query contract


def parse_result(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> QueryResult:
    """Check a result against the query contract and split it into its parts."""
    row = _single_row(rows)
    names = [str(c) for c in columns]
    roles = _find_roles(names)
    status = _check_status(row[roles["status"]])
    taken = set(roles.values())
    context = {name: row[i] for i, name in enumerate(names) if i not in taken}
    return QueryResult(
        status=status,
        actual_value=row[roles["actual_value"]] if "actual_value" in roles else None,
        threshold=row[roles["threshold"]] if "threshold" in roles else None,
        context=context,
    )


def _find_roles(names: list[str]) -> dict[str, int]:
    """Locate status, actual_value and threshold (case-insensitively), once each."""
    roles: dict[str, int] = {}
    for role in _ROLES:
        found = [i for i, name in enumerate(names) if name.lower() == role]
        if len(found) > 1:
            same = ", ".join(names[i] for i in found)
            raise QueryContractError(
                f"the query returned {len(found)} columns named `{role}` "
                f"({same}); keep one"
            )
        if found:
            roles[role] = found[0]
    if "status" not in roles:
        raise QueryContractError(
            "the query returned no `status` column "
            f"(it returned: {_list_columns(names)}); "
            "name the column that holds 'ALERT' or 'OK' `status`"
        )
    _check_unique(names)
    return roles


def _check_unique(names: list[str]) -> None:
    """Refuse two context columns with one name: one value would be lost."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise QueryContractError(
                f"the query returned two columns named {name!r}; "
                "give them distinct aliases"
            )
        seen.add(name)


def _list_columns(names: list[str]) -> str:
    if not names:
        return "no columns"
    shown = ", ".join(names[:_SHOWN_COLUMNS])
    if len(names) > _SHOWN_COLUMNS:
        shown += f", ... ({len(names) - _SHOWN_COLUMNS} more)"
    return shown


def _single_row(rows: Sequence[Sequence[Any]]) -> Sequence[Any]:
    if not rows:
        raise QueryContractError(
            "the query returned no rows; it must return exactly one row with a "
            "`status` column ('ALERT' or 'OK')"
        )
    if len(rows) > 1:
        raise QueryContractError(
            "the query returned more than one row; it must return exactly one "
            "(aggregate the rows, e.g. with COUNT(*) or MAX())"
        )
    return rows[0]


def _check_status(value: Any) -> Status:
    """Accept 'ALERT' or 'OK' in any case, with surrounding spaces; nothing else."""
    if value is None:
        raise QueryContractError(
            "the query returned NULL in `status`; expected 'ALERT' or 'OK'"
        )
    text = (
        value.decode("utf-8", "replace")
        if isinstance(value, (bytes, bytearray))
        else value
    )
    if isinstance(text, str):
        for status in STATUS_VALUES:
            if text.strip().upper() == status:
                return status
    raise QueryContractError(
        f"the query returned status {_preview(text)}; expected 'ALERT' or 'OK'"
    )


def _preview(value: Any) -> str:
    """Quote a value for an error message, shortened and masked."""
    if isinstance(value, str):
        shown = repr(value[:_SHOWN_CHARS]) + (
            "..." if len(value) > _SHOWN_CHARS else ""
        )
    else:
        shown = f"{value!r}"[:_SHOWN_CHARS] + f" (of type {type(value).__name__})"
    return mask(shown)


# ---------------------------------------------------------------------------
# URLs

# plain scheme: (driver our extra installs, its module, SQLAlchemy's default module)
_PREFERRED_DRIVERS = {
    "postgresql": ("psycopg", "psycopg", "psycopg2"),
    "mysql": ("pymysql", "pymysql", "MySQLdb"),
    "mariadb": ("pymysql", "pymysql", "MySQLdb"),
}
_EXTRAS = {
    "postgresql": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "duckdb": "duckdb",
    "bigquery": "bigquery",
    "snowflake": "snowflake",
}


def normalize_url(url: str) -> URL:
    """Parse a database URL; a plain scheme gets the driver our extras install."""
    parsed = make_url(url)
    if parsed.drivername == "postgres":
        parsed = parsed.set(drivername="postgresql")
    preferred = _PREFERRED_DRIVERS.get(parsed.drivername)
    if preferred is None:
        return parsed
    driver, module, default_module = preferred
    # Keep SQLAlchemy's default only when it is installed and ours is not.
    if _installed(module) or not _installed(default_module):
        return parsed.set(drivername=f"{parsed.drivername}+{driver}")
    return parsed


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# ---------------------------------------------------------------------------
# One run of a query


class _Run:
    """One query run: its deadline, and the handle another thread uses to cancel it."""

    def __init__(self, database: str, timeout: float, read_only: bool) -> None:
        if not timeout > 0:
            raise ValueError(f"a query timeout must be positive, not {timeout!r}")
        self.database = database
        self.timeout = timeout
        self.read_only = read_only
        self.deadline = time.monotonic() + timeout
        self.cancelled = False
        self._lock = threading.Lock()
        self._cancel: Callable[[], None] | None = None

    def remaining(self) -> float:
        """Seconds left, never zero: zero means "no limit" to several databases."""
        return max(self.deadline - time.monotonic(), 0.001)

    def expired(self) -> bool:
        return self.cancelled or time.monotonic() >= self.deadline

    @contextmanager
    def cancellable(self, cancel: Callable[[], None] | None) -> Iterator[None]:
        """Let ``cancel`` stop the statement while the block runs, and never after."""
        with self._lock:
            self._cancel = cancel
        try:
            yield
        finally:
            # Wait for a cancel in flight: it must not reach the connection's next user.
            with self._lock:
                self._cancel = None

    def cancel(self) -> None:
        """Stop the running statement from any thread; the run ends in a timeout."""
        with self._lock:
            self.cancelled = True
            if self._cancel is None:
                return
            try:
                self._cancel()
            except Exception as exc:  # noqa: BLE001 - keep the timeout
                context = {"database": self.database, "error": mask(str(exc))}
                log.warning("query cancel failed", extra={"context": context})


# ---------------------------------------------------------------------------
# What differs between databases


@dataclass(frozen=True)
class _Dialect:
    """How one database family is kept read-only, bounded in time, run and cancelled."""

    prepare: Callable[[Connection, _Run], None] = lambda conn, run: None
    finish: Callable[[Connection], None] = lambda conn: None
    fetch: Callable[[AlertDatabase, Connection, str], tuple[list[str], Rows]] = (
        lambda db, conn, sql: _fetch(conn, sql)
    )
    cancel: Callable[[AlertDatabase, Any], None] | None = None
    classify: Callable[[BaseException], Problem | None] = lambda exc: None
    connect_args: Callable[[DatabaseConfig, URL], dict[str, Any]] = lambda cfg, url: {}
    timeout_in_database: bool = False
    # The file a URL names, which must exist: alert databases are read, never created.
    database_file: Callable[[URL], str | None] = lambda url: None
    engine_url: Callable[[URL], URL] = lambda url: url
    label: str = ""


def _driver(conn: Connection) -> Any:
    """The driver's own connection object (psycopg, PyMySQL, sqlite3, DuckDB)."""
    return conn.connection.driver_connection


def _execute_raw(conn: Connection, sql: str) -> None:
    conn.exec_driver_sql(sql, execution_options=_RAW).close()


def _fetch(conn: Connection, sql: str) -> tuple[list[str], Rows]:
    """Send the SQL unparsed and read at most two rows."""
    result = conn.exec_driver_sql(sql, execution_options=_RAW)
    try:
        return _first_rows(result)
    finally:
        result.close()


def _first_rows(result: sqlalchemy.CursorResult[Any]) -> tuple[list[str], Rows]:
    if not result.returns_rows:
        raise _no_result_set()
    return list(result.keys()), [tuple(row) for row in result.fetchmany(2)]


def _no_result_set() -> QueryContractError:
    return QueryContractError(
        "the statement returned no result set; an alert query must be one SELECT "
        "returning one row with a `status` column"
    )


# PostgreSQL


def _prepare_postgresql(conn: Connection, run: _Run) -> None:
    milliseconds = max(1, math.ceil(run.remaining() * 1000))
    read_only = "SET TRANSACTION READ ONLY; " if run.read_only else ""
    _execute_raw(conn, f"{read_only}SET LOCAL statement_timeout = {milliseconds}")


def _fetch_postgresql(
    db: AlertDatabase, conn: Connection, sql: str
) -> tuple[list[str], Rows]:
    """Stream with psycopg: one statement only, and a huge result is never loaded."""
    if conn.dialect.driver != "psycopg":
        return _fetch(conn, sql)
    cursor = _driver(conn).cursor()
    try:
        stream = cursor.stream(sql)
        rows = [tuple(row) for row in itertools.islice(stream, 2)]
        stream.close()
        if len(rows) == 2:
            # Closing a stream early sends a cancel request: keep it from later queries.
            conn.invalidate()
        # No description after a whole stream: the result had no rows at all.
        names = [column.name for column in cursor.description or ()]
        return names, rows
    finally:
        cursor.close()


def _cancel_postgresql(db: AlertDatabase, driver_conn: Any) -> None:
    cancel_safe = getattr(driver_conn, "cancel_safe", None)
    if cancel_safe is not None:
        cancel_safe(timeout=db.config.connect_timeout)
    else:
        driver_conn.cancel()


_PG_PROBLEMS: dict[str, Problem] = {"25006": "read_only", "57014": "timeout"}


def _classify_postgresql(exc: BaseException) -> Problem | None:
    return _PG_PROBLEMS.get(getattr(exc, "sqlstate", None) or "")


def _postgresql_args(cfg: DatabaseConfig, url: URL) -> dict[str, Any]:
    # libpq wants whole seconds and treats 1 as 2. TCP keepalives let a dead network
    # (no reset, no answer) surface as an error within about a minute.
    return {
        "connect_timeout": max(1, math.ceil(cfg.connect_timeout)),
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }


# MariaDB and MySQL


def _mysql_args(cfg: DatabaseConfig, url: URL) -> dict[str, Any]:
    # A server that accepts the connection but never greets would otherwise hang
    # the handshake forever: the read timeout bounds it until the first query.
    seconds = max(1, math.ceil(cfg.connect_timeout))
    return {
        "connect_timeout": seconds,
        "read_timeout": seconds,
        "write_timeout": seconds,
    }


def _prepare_mysql(conn: Connection, run: _Run) -> None:
    driver = _driver(conn)
    if hasattr(driver, "_read_timeout"):
        # PyMySQL reads this before each packet: a dead network ends the run too.
        driver._read_timeout = run.remaining() + CANCEL_GRACE
    if run.read_only:
        # A session setting also covers the implicit commit that DDL performs,
        # which would end a read-only transaction and run the DDL outside it.
        _execute_raw(conn, "SET SESSION TRANSACTION READ ONLY")
    if getattr(conn.dialect, "is_mariadb", False):
        seconds = math.ceil(run.remaining() * 1000) / 1000
        _execute_raw(conn, f"SET SESSION max_statement_time = {seconds:.3f}")
    else:
        milliseconds = max(1, math.ceil(run.remaining() * 1000))
        _execute_raw(conn, f"SET SESSION max_execution_time = {milliseconds}")
    if run.read_only:
        _execute_raw(conn, "START TRANSACTION READ ONLY")


def _fetch_mysql(
    db: AlertDatabase, conn: Connection, sql: str
) -> tuple[list[str], Rows]:
    """Read unbuffered; a result of two rows or more is stopped on the server."""
    result = conn.exec_driver_sql(sql, execution_options=_RAW_STREAMED)
    try:
        columns, rows = _first_rows(result)
    except BaseException:
        result.close()
        raise
    if len(rows) < 2:
        result.close()
        return columns, rows
    # Closing reads the rest of the result, which may be huge: stop the query first.
    db._run_aside(f"KILL QUERY {int(_driver(conn).thread_id())}")
    _discard_killed(db, result)
    conn.invalidate()  # the KILL may still be pending for this session
    return columns, rows


def _discard_killed(db: AlertDatabase, result: sqlalchemy.CursorResult[Any]) -> None:
    """Close the cursor of a query we killed; its "interrupted" error is expected."""
    # Closed by SQLAlchemy, the error would be logged with a traceback on every run.
    try:
        result.cursor.close()
    except db._driver_errors as exc:
        log.debug("killed query's cursor closed: %s", _explain(exc))
    with contextlib.suppress(*db._driver_errors):
        result.close()


def _cancel_mysql(db: AlertDatabase, driver_conn: Any) -> None:
    db._run_aside(f"KILL QUERY {int(driver_conn.thread_id())}")


_MYSQL_PROBLEMS: dict[int, Problem] = {
    1290: "read_only",  # the server runs with --read-only
    1792: "read_only",  # cannot execute statement in a READ ONLY transaction
    1836: "read_only",  # running in read-only mode
    1317: "timeout",  # query execution was interrupted (KILL QUERY)
    1969: "timeout",  # max_statement_time exceeded (MariaDB)
    3024: "timeout",  # max_execution_time exceeded (MySQL)
}


def _classify_mysql(exc: BaseException) -> Problem | None:
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    return _MYSQL_PROBLEMS.get(code) if code is not None else None


# SQLite


def _prepare_sqlite(conn: Connection, run: _Run) -> None:
    if run.read_only:
        _execute_raw(conn, "PRAGMA query_only = ON")
    # SQLite calls this every 1000 VM steps; a true result aborts the query.
    _driver(conn).set_progress_handler(run.expired, 1000)


def _finish_sqlite(conn: Connection) -> None:
    _driver(conn).set_progress_handler(None, 0)


_SQLITE_PROBLEMS: dict[int, Problem] = {8: "read_only", 9: "timeout"}  # primary codes


def _classify_sqlite(exc: BaseException) -> Problem | None:
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    return _SQLITE_PROBLEMS.get(primary) if primary is not None else None


def _sqlite_args(cfg: DatabaseConfig, url: URL) -> dict[str, Any]:
    return {"timeout": cfg.connect_timeout}  # how long to wait for a locked database


def _sqlite_file(url: URL) -> str | None:
    """The file of a plain sqlite3 URL; None for memory or a URI the user wrote."""
    if url.get_driver_name() != "pysqlite" or "uri" in url.query:
        return None
    if not url.database or url.database == ":memory:":
        return None
    return url.database


def _sqlite_engine_url(url: URL) -> URL:
    """Open the file in SQLite's URI mode ``rw``, which never creates a missing file."""
    path = _sqlite_file(url)
    if path is None:
        return url
    # An empty authority keeps a path that starts with // from reading as a host.
    prefix = "file://" if path.startswith("/") else "file:"
    return url.set(database=prefix + quote(path, safe="/")).update_query_dict(
        {"mode": "rw", "uri": "true"}
    )


# DuckDB


def _duckdb_args(cfg: DatabaseConfig, url: URL) -> dict[str, Any]:
    in_memory = not url.database or url.database.startswith(":memory:")
    return {"read_only": True} if cfg.read_only and not in_memory else {}


def _duckdb_file(url: URL) -> str | None:
    """The file of a DuckDB URL; None for memory or a scheme such as md: or s3://."""
    path = url.database
    if not path or path.startswith(":memory:") or re.match(r"[A-Za-z][\w+.-]+:", path):
        return None
    return path


def _classify_duckdb(exc: BaseException) -> Problem | None:
    if type(exc).__name__ == "InterruptException":
        return "timeout"
    return "read_only" if "read-only mode" in str(exc) else None


def _interrupt(db: AlertDatabase, driver_conn: Any) -> None:
    driver_conn.interrupt()


_MYSQL = _Dialect(
    prepare=_prepare_mysql,
    fetch=_fetch_mysql,
    cancel=_cancel_mysql,
    classify=_classify_mysql,
    connect_args=_mysql_args,
    timeout_in_database=True,
)
_DIALECTS: dict[str, _Dialect] = {
    "postgresql": _Dialect(
        prepare=_prepare_postgresql,
        fetch=_fetch_postgresql,
        cancel=_cancel_postgresql,
        classify=_classify_postgresql,
        connect_args=_postgresql_args,
        timeout_in_database=True,
    ),
    "mysql": _MYSQL,
    "mariadb": _MYSQL,
    "sqlite": _Dialect(
        prepare=_prepare_sqlite,
        finish=_finish_sqlite,
        cancel=_interrupt,
        classify=_classify_sqlite,
        connect_args=_sqlite_args,
        timeout_in_database=True,
        database_file=_sqlite_file,
        engine_url=_sqlite_engine_url,
        label="SQLite",
    ),
    "duckdb": _Dialect(
        cancel=_interrupt,
        classify=_classify_duckdb,
        connect_args=_duckdb_args,
        database_file=_duckdb_file,
        label="DuckDB",
    ),
}
_GENERIC = _Dialect()


# ---------------------------------------------------------------------------
# The database


class AlertDatabase:
    """A configured database that alert queries run against, with its pool."""

    def __init__(self, name: str, config: DatabaseConfig) -> None:
        self.name = name
        self.config = config
        self._url = normalize_url(config.url)
        self._dialect = _DIALECTS.get(self._url.get_backend_name(), _GENERIC)
        self._connect_args = {
            **self._dialect.connect_args(config, self._url),
            **config.connect_args,
        }
        self._register_secrets()
        self._engine: Engine | None = None
        self._driver_errors: tuple[type[BaseException], ...] = (SQLAlchemyError,)
        self._lock = threading.Lock()

    @property
    def display_url(self) -> str:
        """The URL without its password, for logs and status pages."""
        return mask(self._url.render_as_string(hide_password=True))

    def evaluate(self, sql: str, timeout: float) -> QueryResult:
        """Run an alert query and check its result; blocks, so use a worker thread."""
        return self._evaluate(sql, self._new_run(timeout))

    async def aevaluate(
        self,
        sql: str,
        timeout: float,
        executor: concurrent.futures.Executor | None = None,
    ) -> QueryResult:
        """Run ``evaluate`` in ``executor``; past the timeout, cancel the statement."""
        run = self._new_run(timeout)
        # Copy the context: the worker's log lines keep alert and correlation ids.
        call = functools.partial(
            contextvars.copy_context().run, self._evaluate, sql, run
        )
        future = asyncio.get_running_loop().run_in_executor(executor, call)
        # An abandoned run's outcome is dropped on purpose; read it so asyncio is quiet.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            done, _ = await asyncio.wait({future}, timeout=timeout + CANCEL_GRACE)
        except asyncio.CancelledError:
            _in_thread(run.cancel)
            raise
        if not done:
            await self._stop(run, future)
            raise self._timeout_error(run)
        return future.result()

    def ping(self, timeout: float) -> float:
        """Return the seconds a trivial round trip (SELECT 1) takes, or raise."""
        start = time.perf_counter()
        self._execute(self._new_run(timeout), lambda conn: conn.scalar(_SELECT_ONE))
        return time.perf_counter() - start

    def dispose(self) -> None:
        """Close the pooled connections; the next query opens new ones."""
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()

    def _run_aside(self, statement: str) -> None:
        """Run one statement on a new connection outside the pool, which may be full."""
        engine = self._get_engine()
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        connection = engine.dialect.connect(*cargs, **{**cparams, **self._connect_args})
        try:
            connection.cursor().execute(statement)
        finally:
            connection.close()

    # -- running

    def _new_run(self, timeout: float) -> _Run:
        return _Run(self.name, timeout, self.config.read_only)

    def _evaluate(self, sql: str, run: _Run) -> QueryResult:
        columns, rows = self._execute(
            run, lambda conn: self._dialect.fetch(self, conn, sql)
        )
        return parse_result(columns, rows)

    def _execute(self, run: _Run, body: Callable[[Connection], T]) -> T:
        """Run ``body`` on a pooled connection, read-only, then roll back."""
        if run.cancelled:  # timed out while it waited for a worker thread
            raise self._timeout_error(run)
        with self._connection(run) as conn:
            try:
                return self._in_transaction(conn, run, body)
            except self._driver_errors as exc:
                raise self._query_error(exc, run) from None

    @contextmanager
    def _connection(self, run: _Run) -> Iterator[Connection]:
        engine = self._get_engine()
        self._check_file()
        try:
            conn = engine.connect()
        except SQLAlchemyError as exc:
            raise self._connect_error(exc) from None
        try:
            yield conn
        finally:
            if run.cancelled and not conn.invalidated:
                conn.invalidate()  # a cancelled session may be mid-protocol
            conn.close()

    def _in_transaction(
        self, conn: Connection, run: _Run, body: Callable[[Connection], T]
    ) -> T:
        dialect = self._dialect
        transaction = conn.begin()
        try:
            with run.cancellable(self._canceller(conn)), self._watchdog(run):
                if run.cancelled:
                    raise self._timeout_error(run)
                dialect.prepare(conn, run)
                outcome = body(conn)
            # A result that came too late (or was cut short) is not trusted.
            if run.expired():
                raise self._timeout_error(run)
            return outcome
        finally:
            _close_transaction(conn, transaction, dialect)

    def _canceller(self, conn: Connection) -> Callable[[], None] | None:
        cancel = self._dialect.cancel
        if cancel is None:
            return None
        driver_conn = _driver(conn)
        return lambda: cancel(self, driver_conn)

    @contextmanager
    def _watchdog(self, run: _Run) -> Iterator[None]:
        """Cancel from a timer where the database has no statement timeout."""
        if self._dialect.timeout_in_database or self._dialect.cancel is None:
            yield
            return
        timer = threading.Timer(run.remaining(), run.cancel)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    async def _stop(self, run: _Run, future: asyncio.Future[QueryResult]) -> None:
        """Cancel a run that outlived its timeout; give its worker a moment to end."""
        _in_thread(run.cancel)
        done, _ = await asyncio.wait({future}, timeout=CANCEL_GRACE)
        if not done:
            log.warning(
                "query still running after cancel",
                extra={"context": {"database": self.name, "timeout": run.timeout}},
            )

    def _check_file(self) -> None:
        """Refuse a missing database file before the driver creates an empty one."""
        path = self._dialect.database_file(self._url)
        if path is None or os.path.exists(path):
            return
        raise DatabaseConnectionError(
            mask(
                f"database {self.name!r}: {self._dialect.label} database file not "
                f"found: {os.path.abspath(path)}; alert databases are only read, "
                "so it is not created (check the path in the URL)"
            )
        )

    def _get_engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = self._create_engine()
            return self._engine

    def _create_engine(self) -> Engine:
        try:
            url = self._dialect.engine_url(self._url)
            dialect_class: Any = url.get_dialect()
            pool_class = dialect_class.get_pool_class(url)
            engine = sqlalchemy.create_engine(url, **self._pool_options(pool_class))
        except NoSuchModuleError:
            raise DatabaseConnectionError(
                f"database {self.name!r}: no SQLAlchemy dialect is installed for "
                f"{self._url.drivername!r} ({self.display_url})"
            ) from None
        except ImportError as exc:
            raise DatabaseConnectionError(self._missing_driver(exc)) from None
        self._driver_errors = (SQLAlchemyError, engine.dialect.loaded_dbapi.Error)
        return engine

    def _pool_options(self, pool_class: type[Any]) -> dict[str, Any]:
        cfg = self.config
        options: dict[str, Any] = {
            "pool_pre_ping": True,
            "pool_recycle": max(1, math.ceil(cfg.pool_recycle)),
            "connect_args": self._connect_args,
        }
        if issubclass(pool_class, QueuePool):
            options.update(
                pool_size=cfg.pool_size,
                max_overflow=cfg.max_overflow,
                pool_timeout=cfg.connect_timeout,
            )
        return options

    def _register_secrets(self) -> None:
        register_secret(self._url.password)
        for key, value in self.config.connect_args.items():
            if isinstance(value, str) and _SECRET_KEY.search(key):
                register_secret(value)

    # -- errors

    def _missing_driver(self, exc: ImportError) -> str:
        extra = _EXTRAS.get(self._url.get_backend_name())
        hint = f"; install it with: pip install 'sqlsentinel[{extra}]'" if extra else ""
        return mask(
            f"database {self.name!r}: the driver for {self._url.drivername!r} is not "
            f"installed ({exc}){hint}"
        )

    def _connect_error(self, exc: SQLAlchemyError) -> DatabaseConnectionError:
        if isinstance(exc, PoolTimeoutError):
            cfg = self.config
            return DatabaseConnectionError(
                f"database {self.name!r}: no free connection within "
                f"{cfg.connect_timeout:g}s "
                f"(pool_size {cfg.pool_size}, max_overflow {cfg.max_overflow}); "
                "other alert queries still hold them all"
            )
        return DatabaseConnectionError(
            f"cannot connect to database {self.name!r} ({self.display_url}): "
            f"{_explain(exc)}"
        )

    def _query_error(
        self, exc: BaseException, run: _Run
    ) -> QueryError | QueryTimeoutError | ReadOnlyViolationError:
        if run.cancelled:
            return self._timeout_error(run)
        problem = self._dialect.classify(_original(exc))
        if problem == "timeout" and run.expired():
            return self._timeout_error(run)
        if problem == "read_only":
            return ReadOnlyViolationError(
                f"the query tried to change data on database {self.name!r}, which "
                f"alert queries may not do: {_explain(exc)}"
            )
        return QueryError(
            f"the query failed on database {self.name!r}: {_explain(exc)}"
        )

    def _timeout_error(self, run: _Run) -> QueryTimeoutError:
        how = "; it was cancelled" if run.cancelled else ""
        return QueryTimeoutError(
            f"the query on database {self.name!r} did not finish within its timeout "
            f"of {run.timeout:g}s{how}"
        )


def _close_transaction(conn: Connection, transaction: Any, dialect: _Dialect) -> None:
    """Always roll back; a connection that cannot even do that is discarded."""
    try:
        if not conn.invalidated:
            dialect.finish(conn)
        transaction.rollback()
    except Exception:  # noqa: BLE001 - the query's outcome matters more than cleanup
        if not conn.invalidated:
            conn.invalidate()


def _original(exc: BaseException) -> BaseException:
    return exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc


def _explain(exc: BaseException) -> str:
    """The driver's own explanation, with secrets masked."""
    exc = _original(exc)
    args = exc.args
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        text = f"{args[1]} (error {args[0]})"  # PyMySQL's (code, message)
    else:
        text = str(exc).strip() or type(exc).__name__
    return mask(text)


def _in_thread(target: Callable[[], None]) -> None:
    """Start ``target`` on its own thread: a worker pool may be full of hung queries."""
    threading.Thread(target=target, name="sqlsentinel-cancel", daemon=True).start()

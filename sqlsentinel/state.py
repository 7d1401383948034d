"""The state database: alert state, execution history, owed notifications and silences.

Any SQLAlchemy URL works; SQLite by default, PostgreSQL for production. Several
daemons may share one PostgreSQL state database: every write is a short
transaction keyed by alert name or execution id, notifications are claimed with a
lease before they are sent, and scheduled runs can be claimed once per
(alert, scheduled time) in ``sentinel_run_claims``.

The schema upgrades itself: missing tables are created and missing columns are
added (additive changes only), and the version is recorded in ``sentinel_meta``.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.schema import CreateColumn

from sqlsentinel.errors import StateStoreError
from sqlsentinel.masking import mask

SCHEMA_VERSION = 1

metadata = MetaData()

meta_table = Table(
    "sentinel_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

alert_state = Table(
    "sentinel_alert_state",
    metadata,
    Column("alert_name", String(200), primary_key=True),
    Column("status", String(8), nullable=False),  # OK, ALERT, ERROR
    Column("since", DateTime(timezone=True), nullable=False),
    Column("last_execution_id", String(32)),
    Column("last_run_at", DateTime(timezone=True)),
    Column("notified_status", String(8), nullable=False, server_default="OK"),
    Column("error_notified", Boolean, nullable=False, server_default="0"),
    Column("last_notified_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Bumped by every write: a write based on an older read is refused (StateConflict).
    Column("version", Integer, nullable=False, server_default="0"),
)

executions = Table(
    "sentinel_executions",
    metadata,
    Column("execution_id", String(32), primary_key=True),
    Column("alert_name", String(200), nullable=False),
    Column("trigger", String(16), nullable=False),  # schedule, manual, dry-run
    Column("scheduled_for", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("duration_ms", Float),
    Column("outcome", String(16), nullable=False),  # ok, alert, error, cancelled
    Column("status", String(8)),  # state after the execution
    Column("previous_status", String(8)),
    Column("actual_value", Text),  # JSON
    Column("threshold", Text),  # JSON
    Column("context", Text),  # JSON
    Column("error", Text),
    Column("silenced", Boolean, nullable=False, server_default="0"),
    Column("correlation_id", String(32)),
    Column("host", String(255)),
    Index("ix_sentinel_executions_alert_started", "alert_name", "started_at"),
    Index("ix_sentinel_executions_started", "started_at"),
)

outbox = Table(
    "sentinel_notifications",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("execution_id", String(32), nullable=False),
    Column("alert_name", String(200), nullable=False),
    Column("channel_key", String(255), nullable=False),
    Column("channel_label", String(255), nullable=False),
    Column("kind", String(16), nullable=False),  # firing, repeat, resolved, error
    Column("payload", Text, nullable=False),  # JSON, Notification.to_payload()
    Column("status", String(16), nullable=False),  # owed, delivered, failed
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_until", DateTime(timezone=True)),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True)),
    UniqueConstraint("execution_id", "channel_key", name="uq_sentinel_notification"),
    Index("ix_sentinel_notifications_due", "status", "next_attempt_at"),
)

silences = Table(
    "sentinel_silences",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alert_name", String(200), nullable=False),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("comment", Text),
    Column("created_by", String(255)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_sentinel_silences_alert", "alert_name", "ends_at"),
)

run_claims = Table(
    "sentinel_run_claims",
    metadata,
    Column("alert_name", String(200), primary_key=True),
    Column("scheduled_for", DateTime(timezone=True), primary_key=True),
    Column("claimed_by", String(64), nullable=False),
    Column("claimed_at", DateTime(timezone=True), nullable=False),
)


def utc(value: datetime | None) -> datetime | None:
    """Read back a stored datetime as aware UTC (SQLite keeps no zone)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _aware(value: datetime) -> datetime:
    """Like utc(), for columns that are never NULL."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


# ---------------------------------------------------------------------------
# Records


@dataclass
class AlertState:
    alert_name: str
    status: str = "OK"
    since: datetime | None = None
    last_execution_id: str | None = None
    last_run_at: datetime | None = None
    notified_status: str = "OK"
    error_notified: bool = False
    last_notified_at: datetime | None = None
    version: int | None = None  # None: never stored


@dataclass
class ExecutionRecord:
    execution_id: str
    alert_name: str
    trigger: str
    started_at: datetime
    outcome: str
    finished_at: datetime | None = None
    duration_ms: float | None = None
    scheduled_for: datetime | None = None
    status: str | None = None
    previous_status: str | None = None
    actual_value: Any = None
    threshold: Any = None
    context: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    silenced: bool = False
    correlation_id: str | None = None
    notifications: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "alert_name": self.alert_name,
            "trigger": self.trigger,
            "scheduled_for": _iso(self.scheduled_for),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration_ms": self.duration_ms,
            "outcome": self.outcome,
            "status": self.status,
            "previous_status": self.previous_status,
            "actual_value": self.actual_value,
            "threshold": self.threshold,
            "context": self.context,
            "error": self.error,
            "silenced": self.silenced,
            "correlation_id": self.correlation_id,
            "notifications": self.notifications,
        }


@dataclass
class OwedNotification:
    id: int
    execution_id: str
    alert_name: str
    channel_key: str
    channel_label: str
    kind: str
    payload: dict[str, Any]
    attempts: int


@dataclass
class Silence:
    id: int
    alert_name: str
    starts_at: datetime
    ends_at: datetime
    comment: str | None
    created_by: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "alert_name": self.alert_name,
            "starts_at": _iso(self.starts_at),
            "ends_at": _iso(self.ends_at),
            "comment": self.comment,
            "created_by": self.created_by,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# ---------------------------------------------------------------------------
# The store


class StateStore:
    """Blocking access to the state database; call it from one worker thread."""

    def __init__(self, url: str, *, owner: str | None = None) -> None:
        self.url = url
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.engine = _make_engine(url)
        self._ready = False

    @property
    def display_url(self) -> str:
        return mask(self.url)

    # -- lifecycle --------------------------------------------------------

    def open(self, *, create: bool = True) -> None:
        """Create or upgrade the schema; safe to call again, and from several daemons at once.

        With ``create=False`` nothing is written: a database without SQL Sentinel's
        tables, or with an older schema, is refused instead of being changed.
        """
        if self._ready:
            return
        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                with self.engine.begin() as conn:
                    if create:
                        _lock_schema(conn)
                        upgrade_schema(conn)
                    else:
                        _check_schema(conn, self.display_url)
                break
            except SQLAlchemyError as exc:
                # Two daemons creating the tables at once can collide where the
                # database offers no lock; the second try sees the tables.
                if attempt < attempts and create:
                    continue
                raise StateStoreError(
                    f"state database {self.display_url}: {mask(str(getattr(exc, 'orig', None) or exc))}"
                ) from None
        self._ready = True

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self._conn() as conn:
            conn.execute(text("SELECT 1"))

    @contextmanager
    def _conn(self) -> Iterator[Connection]:
        self.open()
        try:
            with self.engine.begin() as conn:
                yield conn
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise StateStoreError(
                f"state database {self.display_url}: {mask(str(getattr(exc, 'orig', None) or exc))}"
            ) from None

    # -- alert state --------------------------------------------------------

    def get_state(self, alert_name: str) -> AlertState:
        with self._conn() as conn:
            row = conn.execute(
                select(alert_state).where(alert_state.c.alert_name == alert_name)
            ).first()
        return _state_from_row(row) if row else AlertState(alert_name)

    def states_of(self, names: Sequence[str]) -> dict[str, AlertState]:
        """The states of some alerts, read in one query (absent ones are missing)."""
        if len(names) > 500:
            return {n: st for n, st in self.all_states().items() if n in set(names)}
        with self._conn() as conn:
            rows = conn.execute(
                select(alert_state).where(alert_state.c.alert_name.in_(list(names)))
            ).all()
        return {row.alert_name: _state_from_row(row) for row in rows}

    def all_states(self) -> dict[str, AlertState]:
        with self._conn() as conn:
            rows = conn.execute(select(alert_state)).all()
        return {row.alert_name: _state_from_row(row) for row in rows}

    def save_execution(
        self,
        record: ExecutionRecord,
        state: AlertState,
        notifications: Sequence[tuple[str, str, str, dict[str, Any]]],
        now: datetime | None = None,
    ) -> None:
        """Write the execution, the new alert state and the notifications it owes, atomically.

        ``notifications`` holds (channel_key, channel_label, kind, payload).
        """
        self.save_executions([(record, state, notifications)], now)

    def save_executions(
        self,
        items: Sequence[
            tuple[
                ExecutionRecord,
                AlertState,
                Sequence[tuple[str, str, str, dict[str, Any]]],
            ]
        ],
        now: datetime | None = None,
    ) -> None:
        """Write several executions with their states and owed notifications in one transaction.

        The notifications are due at ``now`` (the engine's clock).
        """
        now = now or datetime.now(UTC)
        rows: list[dict[str, Any]] = []
        owed: list[dict[str, Any]] = []
        with self._conn() as conn:
            for record, state, notifications in items:
                rows.append(_execution_values(record, self.owner))
                if record.outcome != "cancelled":
                    _upsert_state(conn, state, now)
                owed.extend(
                    _owed_row(record.execution_id, record.alert_name, item, now)
                    for item in notifications
                )
            if rows:
                conn.execute(insert(executions), rows)
            if owed:
                conn.execute(insert(outbox), owed)

    def save_state(self, state: AlertState) -> None:
        with self._conn() as conn:
            _upsert_state(conn, state, datetime.now(UTC))

    def enqueue(
        self,
        execution_id: str,
        alert_name: str,
        items: Sequence[tuple[str, str, str, dict[str, Any]]],
        state: AlertState,
        now: datetime | None = None,
    ) -> None:
        """Owe notifications decided outside an execution (a silence ended), due at ``now``."""
        now = now or datetime.now(UTC)
        with self._conn() as conn:
            _upsert_state(conn, state, now)
            for item in items:
                try:
                    with conn.begin_nested():
                        row = _owed_row(execution_id, alert_name, item, now)
                        conn.execute(insert(outbox).values(**row))
                except IntegrityError:
                    continue  # already owed for that execution and channel

    # -- outbox -------------------------------------------------------------

    def claim_due(
        self,
        now: datetime,
        *,
        execution_ids: Collection[str] | None = None,
        lease: float = 120.0,
        limit: int = 1000,
    ) -> list[OwedNotification]:
        """Claim owed notifications that are due, with a lease so no other daemon sends them."""
        query = select(outbox).where(
            outbox.c.status == "owed",
            outbox.c.next_attempt_at <= now,
            or_(outbox.c.lease_until.is_(None), outbox.c.lease_until < now),
        )
        if execution_ids is not None:
            if not execution_ids:
                return []
            query = query.where(outbox.c.execution_id.in_(list(execution_ids)))
        query = query.order_by(outbox.c.id).limit(limit)
        claimed = []
        with self._conn() as conn:
            for row in conn.execute(query).all():
                result = conn.execute(
                    update(outbox)
                    .where(
                        outbox.c.id == row.id,
                        outbox.c.status == "owed",
                        or_(outbox.c.lease_until.is_(None), outbox.c.lease_until < now),
                    )
                    .values(
                        lease_owner=self.owner,
                        lease_until=now + timedelta(seconds=lease),
                    )
                )
                if result.rowcount == 1:
                    claimed.append(
                        OwedNotification(
                            id=row.id,
                            execution_id=row.execution_id,
                            alert_name=row.alert_name,
                            channel_key=row.channel_key,
                            channel_label=row.channel_label,
                            kind=row.kind,
                            payload=json.loads(row.payload),
                            attempts=row.attempts,
                        )
                    )
        return claimed

    def mark_delivered(self, notification_id: int, attempts: int) -> None:
        now = datetime.now(UTC)
        with self._conn() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.id == notification_id)
                .values(
                    status="delivered",
                    attempts=attempts,
                    delivered_at=now,
                    last_error=None,
                    lease_owner=None,
                    lease_until=None,
                )
            )

    def mark_failed(
        self,
        notification_id: int,
        attempts: int,
        error: str,
        *,
        retry_at: datetime | None,
    ) -> None:
        """Record a failed attempt: still owed until ``retry_at``, or failed for good when None."""
        values: dict[str, Any] = {
            "attempts": attempts,
            "last_error": mask(error)[:2000],
            "lease_owner": None,
            "lease_until": None,
        }
        if retry_at is None:
            values["status"] = "failed"
        else:
            values["next_attempt_at"] = retry_at
        with self._conn() as conn:
            conn.execute(
                update(outbox).where(outbox.c.id == notification_id).values(**values)
            )

    def deliveries(
        self, execution_ids: Collection[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """What was owed and delivered for these executions, per execution id."""
        found: dict[str, list[dict[str, Any]]] = {}
        if not execution_ids:
            return found
        with self._conn() as conn:
            rows = conn.execute(
                select(outbox)
                .where(outbox.c.execution_id.in_(list(execution_ids)))
                .order_by(outbox.c.id)
            ).all()
        for n in rows:
            found.setdefault(n.execution_id, []).append(_delivery(n))
        return found

    def owed_counts(self) -> dict[str, int]:
        with self._conn() as conn:
            rows = conn.execute(
                select(outbox.c.channel_label, func.count())
                .where(outbox.c.status == "owed")
                .group_by(outbox.c.channel_label)
            ).all()
        return {label: count for label, count in rows}

    # -- history --------------------------------------------------------------

    def history(
        self,
        alert_name: str | None = None,
        limit: int = 50,
        since: datetime | None = None,
    ) -> list[ExecutionRecord]:
        query = (
            select(executions)
            .order_by(executions.c.started_at.desc(), executions.c.execution_id)
            .limit(limit)
        )
        if alert_name:
            query = query.where(executions.c.alert_name == alert_name)
        if since:
            query = query.where(executions.c.started_at >= since)
        with self._conn() as conn:
            rows = conn.execute(query).all()
            ids = [row.execution_id for row in rows]
            deliveries: dict[str, list[dict[str, Any]]] = {}
            if ids:
                for n in conn.execute(
                    select(outbox)
                    .where(outbox.c.execution_id.in_(ids))
                    .order_by(outbox.c.id)
                ).all():
                    deliveries.setdefault(n.execution_id, []).append(_delivery(n))
        return [
            _execution_from_row(row, deliveries.get(row.execution_id, []))
            for row in rows
        ]

    def last_execution(self, alert_name: str) -> ExecutionRecord | None:
        found = self.history(alert_name, limit=1)
        return found[0] if found else None

    def purge(self, retention_days: int, now: datetime | None = None) -> int:
        """Delete history and settled notifications older than the retention; return rows removed."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
        with self._conn() as conn:
            removed = conn.execute(
                delete(executions).where(executions.c.started_at < cutoff)
            ).rowcount
            removed += conn.execute(
                delete(outbox).where(
                    outbox.c.status != "owed", outbox.c.created_at < cutoff
                )
            ).rowcount
            removed += conn.execute(
                delete(silences).where(silences.c.ends_at < cutoff)
            ).rowcount
            removed += conn.execute(
                delete(run_claims).where(run_claims.c.scheduled_for < cutoff)
            ).rowcount
        return int(removed)

    # -- silences -------------------------------------------------------------

    def add_silence(
        self,
        alert_name: str,
        starts_at: datetime,
        ends_at: datetime,
        comment: str | None = None,
        created_by: str | None = None,
    ) -> Silence:
        with self._conn() as conn:
            result = conn.execute(
                insert(silences).values(
                    alert_name=alert_name,
                    starts_at=starts_at,
                    ends_at=ends_at,
                    comment=comment,
                    created_by=created_by,
                    created_at=datetime.now(UTC),
                )
            )
            new_id = (
                result.inserted_primary_key[0] if result.inserted_primary_key else 0
            )
        return Silence(int(new_id), alert_name, starts_at, ends_at, comment, created_by)

    def end_silences(self, alert_name: str, now: datetime) -> int:
        with self._conn() as conn:
            return int(
                conn.execute(
                    update(silences)
                    .where(
                        silences.c.alert_name == alert_name, silences.c.ends_at > now
                    )
                    .values(ends_at=now)
                ).rowcount
            )

    def active_silences(
        self, now: datetime, alert_name: str | None = None
    ) -> list[Silence]:
        query = select(silences).where(
            silences.c.starts_at <= now, silences.c.ends_at > now
        )
        if alert_name:
            query = query.where(silences.c.alert_name == alert_name)
        with self._conn() as conn:
            rows = conn.execute(query.order_by(silences.c.ends_at)).all()
        return [
            Silence(
                r.id,
                r.alert_name,
                _aware(r.starts_at),
                _aware(r.ends_at),
                r.comment,
                r.created_by,
            )
            for r in rows
        ]

    # -- scheduled-run claims --------------------------------------------------

    def claim_run(self, alert_name: str, scheduled_for: datetime) -> bool:
        """Claim one scheduled run; False when another daemon already claimed it."""
        try:
            with self._conn() as conn:
                conn.execute(
                    insert(run_claims).values(
                        alert_name=alert_name,
                        scheduled_for=scheduled_for,
                        claimed_by=self.owner,
                        claimed_at=datetime.now(UTC),
                    )
                )
        except IntegrityError:
            return False
        return True


# ---------------------------------------------------------------------------
# Helpers


def _make_engine(url: str) -> Engine:
    from sqlsentinel.database import normalize_url

    parsed = normalize_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "pool_recycle": 1800}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"connect_args": {"timeout": 30, "check_same_thread": False}}
    else:
        kwargs.update(pool_size=2, max_overflow=4, pool_timeout=30)
        if parsed.get_backend_name() in {"postgresql", "mysql", "mariadb"}:
            kwargs["connect_args"] = {"connect_timeout": 10}
    engine = create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets readers (status, history) run beside the daemon's writes; NORMAL
    # sync keeps commits cheap while staying safe against application crashes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


_SCHEMA_LOCK_ID = 0x5E171E1  # any constant: SQL Sentinel's schema lock


def _lock_schema(conn: Connection) -> None:
    """Serialize schema creation between daemons sharing one server database."""
    # PostgreSQL releases a transaction lock at commit; elsewhere open() retries.
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK_ID})"))


def _check_schema(conn: Connection, where: str) -> None:
    """Refuse, without writing, a database that is not an up-to-date SQL Sentinel state database."""
    if not inspect(conn).has_table(meta_table.name):
        raise StateStoreError(
            f"{where} holds no SQL Sentinel state (no {meta_table.name} table); "
            "nothing has been recorded there (check --state-db or SQLSENTINEL_STATE_DB)"
        )
    version = conn.execute(
        select(meta_table.c.value).where(meta_table.c.key == "schema_version")
    ).scalar()
    if version is None or int(version) != SCHEMA_VERSION:
        raise StateStoreError(
            f"{where} has state schema version {version}, this SQL Sentinel uses "
            f"{SCHEMA_VERSION}: run `sqlsentinel run` or the daemon once to upgrade it"
        )


def upgrade_schema(conn: Connection) -> None:
    """Create missing tables, add missing columns, and record the schema version."""
    inspector = inspect(conn)
    existing = set(inspector.get_table_names())
    metadata.create_all(conn, checkfirst=True)
    for table in metadata.sorted_tables:
        if table.name not in existing:
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                _add_column(conn, table, column)
    version = conn.execute(
        select(meta_table.c.value).where(meta_table.c.key == "schema_version")
    ).scalar()
    if version is None:
        conn.execute(
            insert(meta_table).values(key="schema_version", value=str(SCHEMA_VERSION))
        )
    elif int(version) < SCHEMA_VERSION:
        conn.execute(
            update(meta_table)
            .where(meta_table.c.key == "schema_version")
            .values(value=str(SCHEMA_VERSION))
        )
    elif int(version) > SCHEMA_VERSION:
        raise StateStoreError(
            f"the state database has schema version {version}, newer than this SQL Sentinel "
            f"understands ({SCHEMA_VERSION}); upgrade SQL Sentinel"
        )


def _add_column(conn: Connection, table: Table, column: Column[Any]) -> None:
    spec = CreateColumn(column).compile(dialect=conn.dialect)
    ddl = f"ALTER TABLE {conn.dialect.identifier_preparer.format_table(table)} ADD COLUMN {spec}"
    if not column.nullable and column.server_default is None:
        raise StateStoreError(
            f"cannot add required column {table.name}.{column.name} without a default"
        )
    conn.execute(text(ddl))


def _owed_row(
    execution_id: str,
    alert_name: str,
    item: tuple[str, str, str, dict[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    """An outbox row for one (channel_key, channel_label, kind, payload), due at ``now``."""
    key, label, kind, payload = item
    return {
        "execution_id": execution_id,
        "alert_name": alert_name,
        "channel_key": key,
        "channel_label": label,
        "kind": kind,
        "payload": json.dumps(payload, ensure_ascii=False),
        "status": "owed",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def _delivery(row: Any) -> dict[str, Any]:
    return {
        "channel": row.channel_label,
        "kind": row.kind,
        "status": row.status,
        "attempts": row.attempts,
        "error": row.last_error,
        "delivered_at": _iso(utc(row.delivered_at)),
    }


def _state_from_row(row: Any) -> AlertState:
    return AlertState(
        alert_name=row.alert_name,
        status=row.status,
        since=utc(row.since),
        last_execution_id=row.last_execution_id,
        last_run_at=utc(row.last_run_at),
        notified_status=row.notified_status or "OK",
        error_notified=bool(row.error_notified),
        last_notified_at=utc(row.last_notified_at),
        version=row.version or 0,
    )


class StateConflict(StateStoreError):
    """Raised when an alert's state changed since it was read (another daemon wrote it)."""

    def __init__(self, alert_name: str) -> None:
        super().__init__(f"the state of alert {alert_name!r} changed meanwhile")
        self.alert_name = alert_name


def _upsert_state(conn: Connection, state: AlertState, now: datetime) -> None:
    """Write a state read earlier, refusing if someone else wrote it since (compare and set)."""
    values = {
        "status": state.status,
        "since": state.since or now,
        "last_execution_id": state.last_execution_id,
        "last_run_at": state.last_run_at,
        "notified_status": state.notified_status,
        "error_notified": state.error_notified,
        "last_notified_at": state.last_notified_at,
        "updated_at": now,
    }
    if state.version is None:
        try:
            with conn.begin_nested():
                conn.execute(
                    insert(alert_state).values(
                        alert_name=state.alert_name, version=1, **values
                    )
                )
        except IntegrityError:
            raise StateConflict(state.alert_name) from None
        state.version = 1
        return
    updated = conn.execute(
        update(alert_state)
        .where(
            alert_state.c.alert_name == state.alert_name,
            alert_state.c.version == state.version,
        )
        .values(version=state.version + 1, **values)
    )
    if updated.rowcount != 1:
        raise StateConflict(state.alert_name)
    state.version += 1


def _execution_values(record: ExecutionRecord, owner: str) -> dict[str, Any]:
    from sqlsentinel.values import dumps

    return {
        "execution_id": record.execution_id,
        "alert_name": record.alert_name,
        "trigger": record.trigger,
        "scheduled_for": record.scheduled_for,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "duration_ms": record.duration_ms,
        "outcome": record.outcome,
        "status": record.status,
        "previous_status": record.previous_status,
        "actual_value": dumps(record.actual_value),
        "threshold": dumps(record.threshold),
        "context": dumps(record.context),
        "error": mask(record.error) if record.error else None,
        "silenced": record.silenced,
        "correlation_id": record.correlation_id,
        "host": owner,
    }


def _execution_from_row(row: Any, deliveries: list[dict[str, Any]]) -> ExecutionRecord:
    return ExecutionRecord(
        execution_id=row.execution_id,
        alert_name=row.alert_name,
        trigger=row.trigger,
        scheduled_for=utc(row.scheduled_for),
        started_at=utc(row.started_at),  # type: ignore[arg-type]
        finished_at=utc(row.finished_at),
        duration_ms=row.duration_ms,
        outcome=row.outcome,
        status=row.status,
        previous_status=row.previous_status,
        actual_value=_loads(row.actual_value),
        threshold=_loads(row.threshold),
        context=_loads(row.context) or {},
        error=row.error,
        silenced=bool(row.silenced),
        correlation_id=row.correlation_id,
        notifications=deliveries,
    )


__all__ = ["AlertState", "ExecutionRecord", "OwedNotification", "Silence", "StateStore"]

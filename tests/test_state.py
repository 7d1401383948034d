"""The state database: schema upgrades, PostgreSQL as a shared store, retention, claims."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from sqlsentinel.errors import StateStoreError
from sqlsentinel.state import (
    SCHEMA_VERSION,
    AlertState,
    ExecutionRecord,
    StateConflict,
    StateStore,
)

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)


def record(
    name: str, started: datetime, outcome: str = "alert", **extra
) -> ExecutionRecord:
    return ExecutionRecord(
        execution_id=f"{name}-{started.timestamp():.0f}"[:32],
        alert_name=name,
        trigger="manual",
        started_at=started,
        finished_at=started,
        duration_ms=1.5,
        outcome=outcome,
        status="ALERT",
        **extra,
    )


def payload(name: str) -> dict:
    return {
        "version": 1,
        "kind": "firing",
        "alert": {"name": name},
        "status": "ALERT",
        "execution_id": "x",
        "timestamp": NOW.isoformat(),
    }


class TestSchemaUpgrade:
    def test_older_database_gains_new_tables_and_columns_and_keeps_its_rows(
        self, tmp_path
    ):
        """A state database from before silences, claims and several columns existed is upgraded in place."""
        path = tmp_path / "old.db"
        with sqlite3.connect(path) as conn:
            conn.executescript("""
                CREATE TABLE sentinel_alert_state (
                    alert_name VARCHAR(200) PRIMARY KEY, status VARCHAR(8) NOT NULL,
                    since DATETIME NOT NULL, last_execution_id VARCHAR(32), last_run_at DATETIME,
                    updated_at DATETIME NOT NULL);
                INSERT INTO sentinel_alert_state VALUES ('old_alert', 'ALERT', '2026-01-01 00:00:00', 'e1', NULL, '2026-01-01 00:00:00');
                CREATE TABLE sentinel_executions (
                    execution_id VARCHAR(32) PRIMARY KEY, alert_name VARCHAR(200) NOT NULL,
                    trigger VARCHAR(16) NOT NULL, started_at DATETIME NOT NULL, outcome VARCHAR(16) NOT NULL,
                    actual_value TEXT);
                INSERT INTO sentinel_executions VALUES ('e1', 'old_alert', 'schedule', '2026-01-01 00:00:00', 'alert', '42');
            """)
        conn.close()
        store = StateStore(f"sqlite:///{path}")

        store.open()
        state = store.get_state("old_alert")
        history = store.history("old_alert")
        store.add_silence("old_alert", NOW, NOW + timedelta(hours=1))
        store.close()

        assert (
            state.status == "ALERT"
            and state.notified_status == "OK"
            and state.error_notified is False
        )
        assert [(h.execution_id, h.actual_value, h.silenced) for h in history] == [
            ("e1", 42, False)
        ]
        with sqlite3.connect(path) as conn:
            version = conn.execute(
                "SELECT value FROM sentinel_meta WHERE key='schema_version'"
            ).fetchone()[0]
        conn.close()
        assert int(version) == SCHEMA_VERSION

    def test_newer_schema_is_refused(self, state_url):
        store = StateStore(state_url)
        store.open()
        with store.engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE sentinel_meta SET value = '999' WHERE key = 'schema_version'"
            )
        store.close()

        with pytest.raises(StateStoreError, match="newer than this SQL Sentinel"):
            StateStore(state_url).open()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def store(request, state_url):
    url = (
        state_url if request.param == "sqlite" else request.getfixturevalue("pg_schema")
    )
    store = StateStore(url)
    store.open()
    yield store
    store.close()


class TestStore:
    def test_values_survive_the_round_trip(self, store):
        values = {
            "amount": Decimal("12.30"),
            "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            "big": 2**70,
        }
        rec = record("a", NOW, actual_value=Decimal("1234.5600"), context=values)

        store.save_execution(
            rec,
            AlertState("a", status="ALERT", since=NOW),
            [("webhook:1", "webhook", "firing", payload("a"))],
        )
        got = store.history("a")[0]

        assert got.actual_value == "1234.5600"
        assert got.context == {
            "amount": "12.30",
            "when": "2026-01-02T03:04:05+00:00",
            "big": 2**70,
        }
        assert got.notifications[0]["status"] == "owed"
        assert store.get_state("a").since == NOW

    def test_owed_notification_is_claimed_once(self, store):
        store.save_execution(
            record("a", NOW),
            AlertState("a", status="ALERT", since=NOW),
            [("webhook:1", "webhook", "firing", payload("a"))],
            NOW,
        )
        other = StateStore(store.url, owner="another-daemon")

        first = store.claim_due(NOW + timedelta(seconds=1))
        second = other.claim_due(NOW + timedelta(seconds=1))
        other.close()

        assert len(first) == 1 and second == []

    def test_a_scheduled_run_is_claimed_once_across_daemons(self, store):
        other = StateStore(store.url, owner="another-daemon")

        results = [
            store.claim_run("a", NOW),
            other.claim_run("a", NOW),
            other.claim_run("a", NOW + timedelta(minutes=1)),
        ]
        other.close()

        assert results == [True, False, True]

    def test_retention_removes_old_history_only(self, store):
        store.save_execution(
            record("a", NOW - timedelta(days=100)), AlertState("a", since=NOW), []
        )
        store.save_execution(
            record("a", NOW - timedelta(days=10)), store.get_state("a"), []
        )

        removed = store.purge(90, now=NOW)

        assert removed == 1
        assert len(store.history("a")) == 1

    def test_silences(self, store):
        store.add_silence("a", NOW, NOW + timedelta(hours=2), "maintenance", "ops")

        active = store.active_silences(NOW + timedelta(hours=1))
        ended = store.end_silences("a", NOW + timedelta(hours=1))

        assert [(s.alert_name, s.comment) for s in active] == [("a", "maintenance")]
        assert (
            ended == 1
            and store.active_silences(NOW + timedelta(hours=1, seconds=1)) == []
        )


def test_unreachable_state_database_is_a_clear_error_without_the_password():
    store = StateStore("postgresql://sentinel:s3cr3t-pw@127.0.0.1:1/state")

    with pytest.raises(StateStoreError) as caught:
        store.open()

    assert "127.0.0.1" in str(caught.value) and "s3cr3t-pw" not in str(caught.value)


class TestCompareAndSet:
    def test_a_write_based_on_a_stale_read_is_refused(self, store):
        store.save_state(AlertState("a", status="OK", since=NOW))
        first, second = store.get_state("a"), store.get_state("a")
        first.status = "ALERT"
        store.save_state(first)
        second.status = "ALERT"

        with pytest.raises(StateConflict):
            store.save_state(second)

        assert store.get_state("a").version == first.version

    def test_two_first_writes_of_a_new_alert_conflict(self, store):
        store.save_state(AlertState("new", status="ALERT", since=NOW))

        with pytest.raises(StateConflict):
            store.save_state(AlertState("new", status="ALERT", since=NOW))

    def test_a_refused_write_records_nothing(self, store):
        store.save_state(AlertState("a", status="OK", since=NOW))
        stale = store.get_state("a")
        store.save_state(store.get_state("a"))

        with pytest.raises(StateConflict):
            store.save_execution(
                record("a", NOW),
                stale,
                [("webhook:1", "webhook", "firing", payload("a"))],
                NOW,
            )

        assert store.history("a") == [] and store.owed_counts() == {}


class TestConcurrentStart:
    @pytest.mark.postgres
    def test_daemons_creating_the_schema_at_once_all_succeed(self, pg_schema):
        """Several daemons starting together on an empty PostgreSQL schema all open it."""
        import threading

        stores = [StateStore(pg_schema, owner=f"daemon-{i}") for i in range(4)]
        errors: list[Exception] = []
        barrier = threading.Barrier(len(stores))

        def start(store: StateStore) -> None:
            barrier.wait()
            try:
                store.open()
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for store in stores:
            store.close()

        assert errors == []

    def test_reading_never_writes(self, tmp_path):
        """A read-only open refuses a database that is not SQL Sentinel's, and leaves it alone."""
        other = tmp_path / "app.db"
        with sqlite3.connect(other) as conn:
            conn.execute("CREATE TABLE orders (id INTEGER)")
        conn.close()
        store = StateStore(f"sqlite:///{other}")

        with pytest.raises(StateStoreError, match="holds no SQL Sentinel state"):
            store.open(create=False)
        store.close()

        with sqlite3.connect(other) as conn:
            tables = {
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'"
                )
            }
        conn.close()
        assert tables == {"orders"}

"""The alert life cycle: state, history, notifications owed and delivered, silences."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fixtures_core import set_level
from receivers import Reply
from test_schedule import make_alert

from sqlsentinel.config import load_config
from sqlsentinel.engine import Engine, decide
from sqlsentinel.state import AlertState, StateStore


class FakeClock:
    """A clock tests move by hand; sleeping advances it instantly and is recorded."""

    def __init__(self) -> None:
        self.current = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.current

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.current += timedelta(seconds=seconds)

    def advance(self, **kwargs: float) -> None:
        self.current += timedelta(**kwargs)


CONFIG = """
database: {{url: "sqlite:///{db}"}}
daemon: {{delivery_attempts: 3}}
alerts:
  - name: level_high
    description: The level is above 10
    schedule: "* * * * *"
    repeat_interval: {repeat}
    query: |
      SELECT CASE WHEN value > 10 THEN 'ALERT' ELSE 'OK' END AS status,
             value AS actual_value, 10 AS threshold, 'tank A' AS "where"
      FROM numbers WHERE name = 'level'
    notify:
      - channel: webhook
        url: "{hook}"
  - name: broken
    schedule: "* * * * *"
    query: "SELECT nope FROM nowhere"
    notify:
      - channel: webhook
        url: "{hook}"
"""


@pytest.fixture
def setup(write_config, sample_db: Path, state_url: str, http_receiver):
    clock = FakeClock()
    cfg = load_config(
        write_config(
            CONFIG.format(db=sample_db, hook=http_receiver.url("/hook"), repeat="1h")
        ),
        {},
    )
    store = StateStore(state_url)
    engines: list[Engine] = []

    def make() -> Engine:
        engine = Engine(cfg, store, clock=clock)
        engines.append(engine)
        return engine

    yield make, cfg, store, clock, sample_db, http_receiver
    store.close()


def kinds(receiver) -> list[tuple[str, str]]:
    return [(r.json()["alert"]["name"], r.json()["kind"]) for r in receiver.requests]


class TestLifeCycle:
    async def test_fires_once_repeats_after_interval_and_resolves_once(self, setup):
        make, cfg, store, clock, db, rx = setup
        engine, alert = make(), cfg.alert("level_high")
        set_level(db, 50)

        await engine.execute(alert)
        clock.advance(minutes=1)
        await engine.execute(alert)
        clock.advance(minutes=61)
        await engine.execute(alert)
        set_level(db, 1)
        clock.advance(minutes=1)
        await engine.execute(alert)
        clock.advance(minutes=1)
        await engine.execute(alert)
        await engine.aclose()

        assert kinds(rx) == [
            ("level_high", "firing"),
            ("level_high", "repeat"),
            ("level_high", "resolved"),
        ]
        body = rx.requests[0].json()
        assert (
            body["status"] == "ALERT"
            and body["actual_value"] == 50
            and body["threshold"] == 10
        )
        assert body["previous_status"] is None  # the first run has no previous state
        assert body["context"] == {"where": "tank A"}
        assert store.get_state("level_high").status == "OK"
        assert [r.outcome for r in store.history("level_high")] == [
            "ok",
            "ok",
            "alert",
            "alert",
            "alert",
        ]

    async def test_broken_alert_is_an_error_outcome_with_one_notice_and_others_still_run(
        self, setup
    ):
        make, cfg, store, clock, db, rx = setup
        engine = make()
        set_level(db, 50)

        first = await engine.execute_many(
            [cfg.alert("broken"), cfg.alert("level_high")]
        )
        clock.advance(minutes=1)
        await engine.execute(cfg.alert("broken"))
        await engine.aclose()

        assert [r.outcome for r in first] == ["error", "alert"]
        assert "nowhere" in first[0].error
        assert sorted(kinds(rx)) == [("broken", "error"), ("level_high", "firing")]
        assert store.get_state("broken").status == "ERROR"

    async def test_failed_delivery_stays_owed_then_is_delivered_once(self, setup):
        make, cfg, store, clock, db, rx = setup
        set_level(db, 50)
        rx.reply = Reply.server_error()
        engine = make()

        record = await engine.execute(cfg.alert("level_high"))

        assert len(rx.requests) == 3  # bounded attempts within the run
        assert clock.slept == [1.0, 2.0]
        assert record.notifications[0]["status"] == "owed"
        assert store.owed_counts() == {"webhook": 1}

        rx.reply = Reply.ok()
        clock.advance(seconds=29)
        assert await engine.deliver_due() == 0  # not due yet: retried 30 s later
        clock.advance(seconds=1)
        assert await engine.deliver_due() == 1
        assert await engine.deliver_due() == 0
        await engine.aclose()

        assert len(rx.requests) == 4
        assert store.owed_counts() == {}
        assert store.history("level_high")[0].notifications[0]["status"] == "delivered"

    async def test_rate_limit_retry_after_is_honoured(self, setup):
        make, cfg, _, clock, db, rx = setup
        set_level(db, 50)
        rx.enqueue(Reply.rate_limited("7"))
        engine = make()

        record = await engine.execute(cfg.alert("level_high"))
        await engine.aclose()

        assert 7.0 in clock.slept
        assert record.notifications[0]["status"] == "delivered"
        assert len(rx.requests) == 2

    async def test_rejected_notification_fails_for_good_but_execution_is_recorded(
        self, setup
    ):
        make, cfg, store, _, db, rx = setup
        set_level(db, 50)
        rx.reply = Reply.bad_request()
        engine = make()

        record = await engine.execute(cfg.alert("level_high"))
        await engine.aclose()

        assert len(rx.requests) == 1
        assert record.notifications[0]["status"] == "failed"
        assert store.history("level_high")[0].outcome == "alert"

    async def test_silence_holds_notices_and_tells_when_it_ends(self, setup):
        make, cfg, store, clock, db, rx = setup
        engine = make()
        set_level(db, 50)
        store.add_silence("level_high", clock.now(), clock.now() + timedelta(hours=2))

        record = await engine.execute(cfg.alert("level_high"))
        clock.advance(hours=1)
        await engine.reconcile()
        await engine.deliver_due()
        assert rx.requests == []
        assert record.silenced

        clock.advance(hours=1, seconds=1)
        await engine.reconcile()
        await engine.deliver_due()
        await engine.reconcile()
        await engine.deliver_due()
        await engine.aclose()

        assert kinds(rx) == [("level_high", "firing")]

    async def test_dry_run_records_nothing(self, setup):
        make, cfg, store, _, db, rx = setup
        engine = make()
        set_level(db, 50)

        record = await engine.execute(cfg.alert("level_high"), dry_run=True)
        await engine.aclose()

        assert record.status == "ALERT"
        assert store.history() == [] and rx.requests == []


class TestDecide:
    NOW = datetime(2026, 12, 4, tzinfo=UTC)

    def alert(self, **changes):
        base = make_alert("a").model_dump()
        base.update(changes)
        return type(make_alert("a"))(**base)

    @pytest.mark.parametrize(
        ("notified", "error_notified", "status", "expected"),
        [
            ("OK", False, "OK", None),
            ("OK", False, "ALERT", "firing"),
            ("ALERT", False, "ALERT", None),
            ("ALERT", False, "OK", "resolved"),
            ("OK", False, "ERROR", "error"),
            ("OK", True, "ERROR", None),
            ("OK", True, "OK", "resolved"),
            ("ALERT", True, "ALERT", None),
        ],
    )
    def test_transitions(self, notified, error_notified, status, expected):
        prev = AlertState(
            "a",
            status="OK",
            since=self.NOW,
            notified_status=notified,
            error_notified=error_notified,
        )

        kind, _ = decide(self.alert(), prev, status, self.NOW, silenced=False)

        assert kind == expected

    def test_recovery_notice_can_be_switched_off(self):
        prev = AlertState("a", status="ALERT", since=self.NOW, notified_status="ALERT")

        kind, new = decide(
            self.alert(notify_on_recovery=False), prev, "OK", self.NOW, silenced=False
        )

        assert kind is None and new.notified_status == "OK"

    def test_error_notice_can_be_switched_off(self):
        kind, _ = decide(
            self.alert(notify_on_error=False),
            AlertState("a"),
            "ERROR",
            self.NOW,
            silenced=False,
        )

        assert kind is None

    def test_silence_keeps_the_notice_owed(self):
        kind, new = decide(
            self.alert(), AlertState("a"), "ALERT", self.NOW, silenced=True
        )

        assert kind is None and new.notified_status == "OK" and new.status == "ALERT"


async def test_two_daemons_deciding_on_the_same_state_notify_once(setup):
    """A second engine that read the state before the first one wrote it decides again."""
    make, cfg, store, _, db, rx = setup
    set_level(db, 50)
    first, second = make(), make()
    stale = store.states_of(["level_high"])
    real = store.states_of
    calls = []

    def stale_once(names):
        calls.append(names)
        return stale if len(calls) == 1 else real(names)

    await first.execute(cfg.alert("level_high"))
    store.states_of = stale_once
    try:
        record = await second.execute(cfg.alert("level_high"))
    finally:
        store.states_of = real
    await first.aclose()
    await second.aclose()

    assert len(calls) == 2  # refused once, decided again on a fresh read
    assert record.status == "ALERT" and record.notifications == []
    assert kinds(rx) == [("level_high", "firing")]
    assert len(store.history("level_high")) == 2

"""Running alerts: evaluate the query, move the state, record history, owe and deliver notifications."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlsentinel.config import Alert, LoadedConfig
from sqlsentinel.database import AlertDatabase
from sqlsentinel.errors import DeliveryError, SentinelError
from sqlsentinel.logs import bind, correlation_id, new_id
from sqlsentinel.masking import mask
from sqlsentinel.notify.base import Channel, Notification, NotificationKind
from sqlsentinel.state import (
    AlertState,
    ExecutionRecord,
    OwedNotification,
    StateConflict,
    StateStore,
)
from sqlsentinel.values import to_json_safe

log = logging.getLogger("sqlsentinel.engine")
T = TypeVar("T")

# Backoff between attempts inside one run, and between runs for what stays owed.
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
MAX_IN_RUN_WAIT = 60.0
STATE_WRITE_ATTEMPTS = 5
LATER_RETRY_MAX = 3600.0


class Clock(Protocol):
    def now(self) -> datetime: ...
    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Real time: aware UTC datetimes and asyncio.sleep."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class MetricsSink(Protocol):
    def execution_finished(
        self,
        alert_name: str,
        outcome: str,
        state: str,
        duration_s: float,
        finished_at: float,
        success: bool,
    ) -> None: ...
    def notification_delivered(
        self, channel: str, success: bool, duration_s: float
    ) -> None: ...
    def set_owed(self, owed_by_channel: dict[str, int]) -> None: ...


# ---------------------------------------------------------------------------
# The state machine


def decide(
    alert: Alert, prev: AlertState, status: str, now: datetime, silenced: bool
) -> tuple[NotificationKind | None, AlertState]:
    """Given the previous state and a new status, return what to tell people and the new state.

    ``notified_status`` is what people last heard (OK or ALERT); ``error_notified``
    says whether they heard that the alert fails to run. A silence suppresses the
    notice and leaves those fields alone, so the notice is owed when it ends.
    """
    new = dataclasses.replace(prev, status=status)
    if status != prev.status or prev.since is None:
        new.since = now
    kind: NotificationKind | None = None
    if status == "ERROR":
        if alert.notify_on_error and not prev.error_notified:
            kind = "error"
    elif status == "ALERT":
        if prev.notified_status != "ALERT":
            kind = "firing"
        elif alert.repeat_interval and (
            prev.last_notified_at is None
            or (now - prev.last_notified_at).total_seconds() >= alert.repeat_interval
        ):
            kind = "repeat"
    elif prev.notified_status == "ALERT" or prev.error_notified:
        kind = "resolved" if alert.notify_on_recovery else None
        if kind is None:
            new.notified_status, new.error_notified = "OK", False
    if silenced:
        return None, new
    if kind in ("firing", "repeat"):
        new.notified_status, new.last_notified_at = "ALERT", now
    elif kind == "resolved":
        new.notified_status = "OK"
    elif kind == "error":
        new.error_notified = True
    if status != "ERROR":
        new.error_notified = False
    return kind, new


# ---------------------------------------------------------------------------
# The engine


class Engine:
    """Runs alerts of one configuration against its databases and channels."""

    def __init__(
        self,
        config: LoadedConfig,
        store: StateStore,
        *,
        metrics: MetricsSink | None = None,
        clock: Clock | None = None,
        reuse_databases: Mapping[str, AlertDatabase] | None = None,
        reuse_channels: Mapping[str, Channel] | None = None,
        executors: tuple[ThreadPoolExecutor, ThreadPoolExecutor] | None = None,
    ) -> None:
        """Build the databases and channels of ``config``, reusing the given ones by name and key."""
        from sqlsentinel.notify import build_channel, smtp_settings

        self.config = config
        self.store = store
        self.metrics = metrics
        self.clock: Clock = clock or SystemClock()
        self._owns_executors = executors is None
        self.query_executor, self.state_executor = executors or make_executors(config)
        reuse_databases, reuse_channels = reuse_databases or {}, reuse_channels or {}
        self.databases: dict[str, AlertDatabase] = {
            name: reuse_databases.get(name) or AlertDatabase(name, cfg)
            for name, cfg in config.databases.items()
        }
        self.channels: dict[str, Channel] = {}
        smtp = smtp_settings(config)
        for alert in config.alerts:
            for ch in alert.notify:
                if ch.key not in self.channels:
                    self.channels[ch.key] = reuse_channels.get(ch.key) or build_channel(
                        ch, smtp
                    )

    # -- plumbing -------------------------------------------------------------

    async def in_state_thread(
        self, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        """Run a blocking state-store call on the single state thread, keeping log context."""
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(
            self.state_executor, call
        )

    async def aclose(self) -> None:
        for channel in self.channels.values():
            try:
                await channel.aclose()
            except Exception:
                log.debug("channel close failed", exc_info=True)
        for db in self.databases.values():
            db.dispose()
        if self._owns_executors:
            self.query_executor.shutdown(wait=False, cancel_futures=True)
            self.state_executor.shutdown(wait=True)

    # -- executing --------------------------------------------------------------

    async def execute(
        self,
        alert: Alert,
        *,
        trigger: str = "schedule",
        scheduled_for: datetime | None = None,
        dry_run: bool = False,
    ) -> ExecutionRecord:
        """Run one alert end to end; never raises for a failure of the alert itself."""
        records = await self.execute_many(
            [alert], trigger=trigger, scheduled_for=scheduled_for, dry_run=dry_run
        )
        return records[0]

    async def execute_many(
        self,
        alerts: Sequence[Alert],
        *,
        trigger: str = "schedule",
        scheduled_for: datetime | None = None,
        dry_run: bool = False,
        concurrency: int | None = None,
    ) -> list[ExecutionRecord]:
        """Run alerts (queries in parallel), record them in one transaction, then deliver.

        The record is written before any notification is attempted, so a failing
        channel never loses it.
        """
        semaphore = asyncio.Semaphore(
            concurrency or self.config.raw.daemon.max_concurrency
        )

        async def evaluate(alert: Alert) -> ExecutionRecord:
            async with semaphore:
                return await self._evaluate_recorded(alert, trigger, scheduled_for)

        records = list(await asyncio.gather(*(evaluate(a) for a in alerts)))
        if dry_run:
            for record in records:
                record.status = _status_of(record.outcome)
                self._log_summary(record)
            return records
        await self._settle(list(zip(alerts, records, strict=True)))
        owed_ids = {r.execution_id for r in records if r.notifications}
        if owed_ids:
            await self.deliver_due(execution_ids=owed_ids)
            delivered = await self.in_state_thread(self.store.deliveries, owed_ids)
            for record in records:
                record.notifications = delivered.get(
                    record.execution_id, record.notifications
                )
        return records

    async def _evaluate_recorded(
        self, alert: Alert, trigger: str, scheduled_for: datetime | None
    ) -> ExecutionRecord:
        execution_id = new_id()
        record = ExecutionRecord(
            execution_id=execution_id,
            alert_name=alert.name,
            trigger=trigger,
            started_at=self.clock.now(),
            outcome="error",
            scheduled_for=scheduled_for,
            correlation_id=correlation_id.get(),
        )
        with bind(alert_name=alert.name, execution_id=execution_id):
            started = time.perf_counter()
            try:
                await self._evaluate(alert, record)
            except asyncio.CancelledError:
                record.outcome, record.error = "cancelled", "cut short by shutdown"
                self._finish(record, started)
                await asyncio.shield(
                    self.in_state_thread(
                        self.store.save_execution, record, AlertState(alert.name), ()
                    )
                )
                log.warning(
                    "alert execution cut short",
                    extra={"context": {"duration_ms": record.duration_ms}},
                )
                raise
            self._finish(record, started)
        return record

    async def _evaluate(self, alert: Alert, record: ExecutionRecord) -> None:
        database = self.databases.get(alert.database)
        try:
            if database is None:
                raise SentinelError(f"database {alert.database!r} is not configured")
            result = await database.aevaluate(
                alert.query, alert.timeout, self.query_executor
            )
        except SentinelError as exc:
            record.outcome, record.error = "error", mask(str(exc))
            return
        except Exception as exc:
            record.outcome = "error"
            record.error = mask(f"unexpected {type(exc).__name__}: {exc}")
            log.error("alert evaluation crashed", exc_info=True)
            return
        record.outcome = "alert" if result.status == "ALERT" else "ok"
        record.actual_value = to_json_safe(result.actual_value)
        record.threshold = to_json_safe(result.threshold)
        record.context = to_json_safe(result.context)

    def _finish(self, record: ExecutionRecord, started: float) -> None:
        record.finished_at = self.clock.now()
        record.duration_ms = round((time.perf_counter() - started) * 1000, 3)

    async def _settle(self, pairs: list[tuple[Alert, ExecutionRecord]]) -> None:
        """Move each alert's state, and write executions, states and owed notices together.

        The write is a compare-and-set on each alert's state: when another daemon
        (or `run`) wrote a state in between, the states are read again and the
        transitions decided anew, so people hear of a change once.
        """
        now = self.clock.now()
        try:
            for attempt in range(1, STATE_WRITE_ATTEMPTS + 1):
                try:
                    await self._write_transitions(pairs, now)
                    break
                except StateConflict as exc:
                    if attempt == STATE_WRITE_ATTEMPTS:
                        raise
                    log.info(
                        "state changed meanwhile; deciding again",
                        extra={"context": {"alert_name": exc.alert_name}},
                    )
        except SentinelError as exc:
            log.error(
                "could not record executions",
                extra={"context": {"error": str(exc), "count": len(pairs)}},
            )
            for _, record in pairs:
                record.error = (
                    record.error + "; " if record.error else ""
                ) + f"not recorded: {exc}"
                record.notifications = []
        for alert, record in pairs:
            self._log_summary(record)
            if self.metrics:
                self.metrics.execution_finished(
                    alert.name,
                    record.outcome,
                    _status_of(record.outcome),
                    (record.duration_ms or 0) / 1000,
                    (record.finished_at or now).timestamp(),
                    record.outcome != "error",
                )

    async def _write_transitions(
        self, pairs: list[tuple[Alert, ExecutionRecord]], now: datetime
    ) -> None:
        states = await self.in_state_thread(
            self.store.states_of, [a.name for a, _ in pairs]
        )
        silenced = {
            s.alert_name
            for s in await self.in_state_thread(self.store.active_silences, now)
        }
        writes = [
            self._transition(
                alert,
                record,
                states.get(alert.name) or AlertState(alert.name),
                alert.name in silenced,
            )
            for alert, record in pairs
        ]
        await self.in_state_thread(self.store.save_executions, writes, now)

    def _transition(
        self, alert: Alert, record: ExecutionRecord, prev: AlertState, silenced: bool
    ) -> tuple[ExecutionRecord, AlertState, list[tuple[str, str, str, dict[str, Any]]]]:
        status = _status_of(record.outcome)
        when = record.finished_at or self.clock.now()
        kind, new = decide(alert, prev, status, when, silenced)
        new.last_execution_id, new.last_run_at = record.execution_id, when
        # A state never stored has no previous status: the first run reports null.
        previous = prev.status if prev.version is not None else None
        record.status, record.previous_status, record.silenced = (
            status,
            previous,
            silenced,
        )
        items: list[tuple[str, str, str, dict[str, Any]]] = []
        if kind is not None:
            items = self._owed_items(alert, record, kind, when)
        record.notifications = [
            {"channel": label, "kind": k, "status": "owed"} for _, label, k, _ in items
        ]
        return record, new, items

    def _owed_items(
        self,
        alert: Alert,
        record: ExecutionRecord,
        kind: NotificationKind,
        when: datetime,
    ) -> list[tuple[str, str, str, dict[str, Any]]]:
        """One (channel key, label, kind, payload) per channel of the alert: what is owed."""
        payload = self._notification(alert, record, kind, when).to_payload()
        return [(ch.key, ch.label, kind, payload) for ch in alert.notify]

    def _notification(
        self,
        alert: Alert,
        record: ExecutionRecord,
        kind: NotificationKind,
        now: datetime,
    ) -> Notification:
        return Notification(
            kind=kind,
            alert_name=alert.name,
            status=record.status or "ERROR",
            previous_status=record.previous_status,
            execution_id=record.execution_id,
            timestamp=now,
            database=alert.database,
            description=alert.description,
            actual_value=record.actual_value,
            threshold=record.threshold,
            context=dict(record.context),
            error=record.error,
            labels=dict(alert.labels),
        )

    def _log_summary(self, record: ExecutionRecord) -> None:
        level = logging.ERROR if record.outcome == "error" else logging.INFO
        fields = {
            "status": record.status,
            "outcome": record.outcome,
            "duration_ms": record.duration_ms,
            "actual_value": record.actual_value,
            "threshold": record.threshold,
            "trigger": record.trigger,
        }
        if record.error:
            fields["error"] = record.error
        if record.silenced:
            fields["silenced"] = True
        with bind(alert_name=record.alert_name, execution_id=record.execution_id):
            log.log(level, "alert executed", extra={"context": fields})

    # -- delivering ---------------------------------------------------------------

    async def deliver_due(self, *, execution_ids: set[str] | None = None) -> int:
        """Send owed notifications that are due; return how many were delivered."""
        owed = await self.in_state_thread(
            self.store.claim_due, self.clock.now(), execution_ids=execution_ids
        )
        results = await asyncio.gather(*(self._deliver(n) for n in owed))
        await self.refresh_owed()
        return sum(results)

    async def refresh_owed(self) -> None:
        if self.metrics:
            try:
                self.metrics.set_owed(
                    await self.in_state_thread(self.store.owed_counts)
                )
            except SentinelError:
                log.warning("could not count owed notifications", exc_info=True)

    async def _deliver(self, owed: OwedNotification) -> bool:
        with bind(
            alert_name=owed.alert_name,
            execution_id=owed.execution_id,
            channel=owed.channel_label,
        ):
            channel = self.channels.get(owed.channel_key)
            if channel is None:
                await self.in_state_thread(
                    self.store.mark_failed,
                    owed.id,
                    owed.attempts,
                    "the channel is no longer in the configuration",
                    retry_at=None,
                )
                log.warning("notification dropped: channel no longer configured")
                return False
            notification = Notification.from_payload(owed.payload)
            attempts = owed.attempts
            error = DeliveryError("not attempted")
            per_run = self.config.raw.daemon.delivery_attempts
            for delay in (0.0, *RETRY_DELAYS[: per_run - 1]):
                if delay:
                    await self.clock.sleep(delay)
                attempts += 1
                failure = await self._attempt(channel, notification)
                if failure is None:
                    await self.in_state_thread(
                        self.store.mark_delivered, owed.id, attempts
                    )
                    log.info(
                        "notification delivered",
                        extra={"context": {"kind": owed.kind, "attempts": attempts}},
                    )
                    return True
                error = failure
                if not error.retryable or (error.retry_after or 0) > MAX_IN_RUN_WAIT:
                    break
                if error.retry_after:
                    await self.clock.sleep(error.retry_after)
            retry_at = (
                None
                if not error.retryable
                else self.clock.now()
                + _later(-(-attempts // per_run), error.retry_after)
            )
            await self.in_state_thread(
                self.store.mark_failed, owed.id, attempts, str(error), retry_at=retry_at
            )
            log.error(
                "notification not delivered",
                extra={
                    "context": {
                        "kind": owed.kind,
                        "attempts": attempts,
                        "error": mask(str(error)),
                        "retry_at": retry_at.isoformat() if retry_at else None,
                    }
                },
            )
            return False

    async def _attempt(
        self, channel: Channel, notification: Notification
    ) -> DeliveryError | None:
        started = time.perf_counter()
        try:
            await channel.send(notification)
        except DeliveryError as exc:
            error: DeliveryError | None = exc
        except Exception as exc:
            log.error("channel crashed", exc_info=True)
            error = DeliveryError(
                f"unexpected {type(exc).__name__}: {mask(str(exc))}", retryable=True
            )
        else:
            error = None
        if self.metrics:
            self.metrics.notification_delivered(
                channel.label, error is None, time.perf_counter() - started
            )
        return error

    # -- silences ending, and other owed notices ---------------------------------

    async def reconcile(self, alerts: Sequence[Alert] | None = None) -> int:
        """Owe the notices that silences held back, once the silence is over."""
        now = self.clock.now()
        states = await self.in_state_thread(self.store.all_states)
        silenced = {
            s.alert_name
            for s in await self.in_state_thread(self.store.active_silences, now)
        }
        owed = 0
        for alert in alerts if alerts is not None else self.config.enabled_alerts:
            state = states.get(alert.name)
            if (
                state is None
                or alert.name in silenced
                or state.last_execution_id is None
            ):
                continue
            kind, new = decide(alert, state, state.status, now, False)
            if kind is None or kind == "repeat":
                continue
            last = await self.in_state_thread(self.store.last_execution, alert.name)
            if last is None:
                continue
            items = self._owed_items(alert, last, kind, now)
            try:
                await self.in_state_thread(
                    self.store.enqueue, last.execution_id, alert.name, items, new, now
                )
            except StateConflict:
                continue  # another daemon moved this alert meanwhile; the next pass decides
            owed += len(items)
        return owed


def make_executors(
    config: LoadedConfig,
) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
    """Threads for queries (bounded by the concurrency limit) and one for the state database."""
    concurrency = config.raw.daemon.max_concurrency
    return (
        ThreadPoolExecutor(concurrency + 2, thread_name_prefix="sqlsentinel-query"),
        ThreadPoolExecutor(1, thread_name_prefix="sqlsentinel-state"),
    )


def _status_of(outcome: str) -> str:
    return {"ok": "OK", "alert": "ALERT"}.get(outcome, "ERROR")


def _later(runs: int, retry_after: float | None) -> timedelta:
    """When to try again after ``runs`` failed runs: 30 s, 1 min, 2 min... at most an hour."""
    seconds = min(LATER_RETRY_MAX, 30.0 * 2 ** min(max(0, runs - 1), 20))
    return timedelta(seconds=max(seconds, retry_after or 0))

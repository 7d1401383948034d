"""Health of the daemon, checked in the background and served from memory.

Dependency checks (state database, alert databases, channels) run in one
background task every `interval` seconds, all at once, each under its own
timeout. The endpoints only read the latest results and their age, so any
number of probes costs no database round-trip (docs/api/health-checks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlsentinel.masking import mask
from sqlsentinel.notify.base import ChannelCheck

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

Status = Literal["healthy", "degraded", "unhealthy"]
HEALTHY: Status = "healthy"
DEGRADED: Status = "degraded"
UNHEALTHY: Status = "unhealthy"
_RANK = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}
MESSAGE_LIMIT = 300

DatabaseProbe = Callable[[], Awaitable[None]]
ChannelProbe = Callable[[], Awaitable[ChannelCheck]]
Probe = DatabaseProbe | ChannelProbe
# Keys of checks: ("state", ""), ("database", name) or ("channel", label).
CheckKey = tuple[str, str]
STATE_KEY: CheckKey = ("state", "")


@dataclass
class SchedulerSnapshot:
    """What the scheduler reports about itself; cheap to take, no I/O."""

    running: bool
    jobs_count: int
    next_run: datetime | None
    last_heartbeat: datetime | None


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one background check of one dependency."""

    status: Status
    message: str
    latency_ms: float | None
    checked_at: datetime | None  # wall clock, for people
    checked_mono: float | None  # monotonic clock, for ages


NOT_CHECKED = CheckResult(UNHEALTHY, "not checked yet", None, None, None)


def worst(*statuses: Status) -> Status:
    return max(statuses, key=_RANK.__getitem__, default=HEALTHY)


def describe_error(exc: BaseException) -> str:
    """One short masked line about a failure, without the driver's extra lines."""
    text = str(exc).strip().splitlines()
    first = text[0].strip() if text else ""
    line = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return mask(line)[:MESSAGE_LIMIT]


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, or None."""
    if moment is None:
        return None
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ProbeBusyError(RuntimeError):
    """Raised when the previous check of the same database has not returned yet."""


def engine_probe(engine: Engine) -> DatabaseProbe:
    """A probe running `SELECT 1` on a SQLAlchemy engine (see blocking_probe)."""
    from sqlalchemy import Select, literal_column, select

    ping: Select[tuple[object]] = select(
        literal_column("1")
    )  # the dialect adds FROM DUAL where needed

    def check() -> None:
        with engine.connect() as conn:
            conn.execute(ping)

    return blocking_probe(check)


def blocking_probe(check: Callable[[], object]) -> DatabaseProbe:
    """Run a blocking check in its own thread, one at a time.

    A database that hangs keeps at most one thread busy: while the previous
    check has not returned, the next one fails at once instead of stacking up.
    A plain daemon thread (not the loop's executor) is used so a timed-out
    check can never starve other work nor be cancelled before it starts.
    """
    busy = threading.Lock()

    def run(loop: asyncio.AbstractEventLoop, done: asyncio.Future[None]) -> None:
        error: BaseException | None = None
        try:
            check()
        except BaseException as exc:  # noqa: BLE001 - handed over to the awaiting probe
            error = exc
        finally:
            busy.release()
        with contextlib.suppress(RuntimeError):  # the loop may be closed by now
            loop.call_soon_threadsafe(_settle, done, error)

    async def probe() -> None:
        if not busy.acquire(blocking=False):
            raise ProbeBusyError("the previous check has not returned yet")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        threading.Thread(
            target=run, args=(loop, done), daemon=True, name="sqlsentinel-db-check"
        ).start()
        await done

    return probe


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():  # the probe timed out and was cancelled meanwhile
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


class HealthMonitor:
    """Runs dependency checks in the background and answers the three endpoints."""

    def __init__(
        self,
        *,
        version: str,
        interval: float = 10.0,
        check_timeout: float = 3.0,
        heartbeat_max_age: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.version = version
        self.interval = interval
        self.check_timeout = check_timeout
        self.heartbeat_max_age = heartbeat_max_age
        # A result older than this means the background task stopped checking.
        self.stale_after = 3 * interval + check_timeout
        self._clock = clock
        self._wall = wall_clock
        self._started = clock()
        self._probes: dict[CheckKey, Probe] = {}
        self._results: dict[CheckKey, CheckResult] = {}
        self._scheduler: Callable[[], SchedulerSnapshot] | None = None
        self._config_loaded = False
        self._shutting_down = False
        self._cycle: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def set_probes(
        self,
        *,
        state_db: DatabaseProbe | None,
        databases: Mapping[str, DatabaseProbe],
        channels: Mapping[str, ChannelProbe],
    ) -> None:
        """Replace every probe (config load or reload) and check the new set soon."""
        probes: dict[CheckKey, Probe] = {
            ("database", n): p for n, p in databases.items()
        }
        probes.update({("channel", n): p for n, p in channels.items()})
        if state_db is not None:
            probes[STATE_KEY] = state_db
        # Keep the latest results of checks that remain, so a reload does not make
        # the daemon look unhealthy until the new round (started at once) ends.
        self._results = {k: r for k, r in self._results.items() if k in probes}
        self._probes = probes
        self._wake.set()

    def set_scheduler(self, snapshot: Callable[[], SchedulerSnapshot]) -> None:
        self._scheduler = snapshot

    def set_config_loaded(self, loaded: bool) -> None:
        self._config_loaded = loaded

    def set_shutting_down(self) -> None:
        """Fail readiness from now on, so traffic drains before the daemon stops."""
        self._shutting_down = True

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    async def start(self) -> None:
        """Run a first round of checks, then keep checking every `interval`."""
        await self.run_checks_now()
        self._task = asyncio.create_task(self._loop(), name="sqlsentinel-health")

    async def stop(self) -> None:
        for task in (self._task, self._cycle):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._cycle = None

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.run_checks_now()
            except Exception:
                log.exception("health check round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def run_checks_now(self) -> None:
        """Run one round of every check; callers during a round share that round."""
        if self._cycle is None or self._cycle.done():
            self._cycle = asyncio.create_task(
                self._round(), name="sqlsentinel-health-round"
            )
        await asyncio.shield(self._cycle)

    async def _round(self) -> None:
        probes = dict(self._probes)
        results = await asyncio.gather(*(self._check(k, p) for k, p in probes.items()))
        for (key, probe), result in zip(probes.items(), results, strict=True):
            if (
                self._probes.get(key) is probe
            ):  # a reload replaced it mid-round otherwise
                self._store(key, result)

    async def _check(self, key: CheckKey, probe: Probe) -> CheckResult:
        began = self._clock()
        status, message = HEALTHY, "ok"
        try:
            outcome = await asyncio.wait_for(probe(), self.check_timeout)
        except TimeoutError:
            status, message = UNHEALTHY, f"no answer within {self.check_timeout:g} s"
        except Exception as exc:  # noqa: BLE001 - any failure of a probe is a failed check
            status, message = UNHEALTHY, describe_error(exc)
        else:
            if isinstance(outcome, ChannelCheck):
                status, message = outcome.status, mask(outcome.message)[:MESSAGE_LIMIT]
        ended = self._clock()
        latency = round((ended - began) * 1000, 3)
        return CheckResult(status, message, latency, self._wall(), ended)

    def _store(self, key: CheckKey, result: CheckResult) -> None:
        previous = self._results.get(key)
        self._results[key] = result
        if previous is not None and previous.status == result.status:
            return
        if result.status != HEALTHY:
            log.warning(
                "health check failed",
                extra={"context": _log_fields(key, result)},
            )
        elif previous is not None:
            log.info(
                "health check recovered", extra={"context": _log_fields(key, result)}
            )

    def _result(self, key: CheckKey, now: float) -> CheckResult:
        """The latest result, or an unhealthy one if there is none or it is stale."""
        result = self._results.get(key, NOT_CHECKED)
        if result.checked_mono is None or now - result.checked_mono <= self.stale_after:
            return result
        age = now - result.checked_mono
        message = f"last check {age:.0f} s ago: stale ({result.message})"
        return CheckResult(
            UNHEALTHY,
            message,
            result.latency_ms,
            result.checked_at,
            result.checked_mono,
        )

    def _entry(self, key: CheckKey, now: float) -> dict[str, Any]:
        result = self._result(key, now)
        age = (
            None if result.checked_mono is None else round(now - result.checked_mono, 3)
        )
        return {
            "status": result.status,
            "latency_ms": result.latency_ms,
            "message": result.message,
            "checked_at": iso(result.checked_at),
            "age_seconds": age,
        }

    def _database_section(self, now: float) -> dict[str, Any]:
        names = sorted(n for kind, n in self._probes if kind == "database")
        alert_dbs = {n: self._entry(("database", n), now) for n in names}
        status = worst(
            *(DEGRADED for e in alert_dbs.values() if e["status"] != HEALTHY)
        )
        section: dict[str, Any] = {"status": status}
        if STATE_KEY in self._probes:
            section["state_database"] = state = self._entry(STATE_KEY, now)
            if state["status"] != HEALTHY:
                section["status"] = UNHEALTHY
        section["alert_databases"] = alert_dbs
        return section

    def _notifications_section(self, now: float) -> dict[str, Any]:
        names = sorted(n for kind, n in self._probes if kind == "channel")
        channels = {n: self._entry(("channel", n), now) for n in names}
        # A failing channel never makes the daemon unhealthy: alerts still run and
        # are recorded, and the notifications stay owed until the channel is back.
        status = worst(*(DEGRADED for e in channels.values() if e["status"] != HEALTHY))
        return {"status": status, "channels": channels}

    def _snapshot(self) -> tuple[SchedulerSnapshot | None, str | None]:
        if self._scheduler is None:
            return None, "scheduler not started"
        try:
            return self._scheduler(), None
        except Exception as exc:  # noqa: BLE001 - a broken snapshot is an unhealthy scheduler
            return None, describe_error(exc)

    def _heartbeat_age(self, snap: SchedulerSnapshot, wall: datetime) -> float | None:
        if snap.last_heartbeat is None:
            return None
        beat = snap.last_heartbeat
        beat = beat if beat.tzinfo else beat.replace(tzinfo=UTC)
        return round(max((wall - beat).total_seconds(), 0.0), 3)

    def _heartbeat_fresh(
        self, snap: SchedulerSnapshot, wall: datetime, now: float
    ) -> bool:
        age = self._heartbeat_age(snap, wall)
        if age is None:  # no beat yet: fine while the daemon is younger than the limit
            return now - self._started <= self.heartbeat_max_age
        return age <= self.heartbeat_max_age

    def _scheduler_section(self, wall: datetime, now: float) -> dict[str, Any]:
        snap, error = self._snapshot()
        if snap is None:
            return {
                "status": UNHEALTHY,
                "running": False,
                "jobs_count": 0,
                "next_run": None,
                "last_heartbeat": None,
                "heartbeat_age_seconds": None,
                "message": error,
            }
        fresh = self._heartbeat_fresh(snap, wall, now)
        status, message = HEALTHY, "running"
        if not snap.running:
            status, message = UNHEALTHY, "not running"
        elif not fresh:
            status, message = (
                UNHEALTHY,
                f"no heartbeat for over {self.heartbeat_max_age:g} s",
            )
        return {
            "status": status,
            "running": snap.running,
            "jobs_count": snap.jobs_count,
            "next_run": iso(snap.next_run),
            "last_heartbeat": iso(snap.last_heartbeat),
            "heartbeat_age_seconds": self._heartbeat_age(snap, wall),
            "message": message,
        }

    def _head(self, status: Status, wall: datetime, now: float) -> dict[str, Any]:
        return {
            "status": status,
            "timestamp": iso(wall),
            "version": self.version,
            "uptime_seconds": round(now - self._started, 3),
        }

    def health(self) -> tuple[int, dict[str, Any]]:
        """GET /health: every check with its latest result; 503 when unhealthy."""
        now, wall = self._clock(), self._wall()
        checks = {
            "database": self._database_section(now),
            "scheduler": self._scheduler_section(wall, now),
            "notifications": self._notifications_section(now),
            "config": {
                "status": HEALTHY if self._config_loaded else UNHEALTHY,
                "loaded": self._config_loaded,
            },
        }
        status = worst(*(c["status"] for c in checks.values()))
        body = self._head(status, wall, now)
        body["shutting_down"] = self._shutting_down
        body["checks"] = checks
        return (503 if status == UNHEALTHY else 200), body

    def live(self) -> tuple[int, dict[str, Any]]:
        """GET /health/live: the loop answers and the scheduler heartbeat is recent."""
        now, wall = self._clock(), self._wall()
        snap, _ = self._snapshot()
        age = None if snap is None else self._heartbeat_age(snap, wall)
        # Only a wedged scheduler fails liveness: a restart fixes it, whereas a
        # database outage is not cured by restarting (it would only add load).
        stuck = (
            snap is not None
            and not self._shutting_down
            and not self._heartbeat_fresh(snap, wall, now)
        )
        body = self._head(UNHEALTHY if stuck else HEALTHY, wall, now)
        body["heartbeat_age_seconds"] = age
        return (503 if stuck else 200), body

    def ready(self) -> tuple[int, dict[str, Any]]:
        """GET /health/ready: config loaded, state database up, scheduler running."""
        now, wall = self._clock(), self._wall()
        reasons = []
        if self._shutting_down:
            reasons.append("shutting down")
        if not self._config_loaded:
            reasons.append("configuration not loaded")
        if STATE_KEY in self._probes:
            state = self._result(STATE_KEY, now)
            if state.status != HEALTHY:
                reasons.append(f"state database: {state.message}")
        snap, error = self._snapshot()
        if snap is None or not snap.running:
            reasons.append(f"scheduler: {error or 'not running'}")
        body = self._head(UNHEALTHY if reasons else HEALTHY, wall, now)
        body["reasons"] = reasons
        return (503 if reasons else 200), body


def _log_fields(key: CheckKey, result: CheckResult) -> dict[str, Any]:
    kind, name = key
    fields: dict[str, Any] = {
        "check": kind,
        "status": result.status,
        "message": result.message,
    }
    if kind == "database":
        fields["database"] = name
    elif kind == "channel":
        fields["channel"] = name
    return fields

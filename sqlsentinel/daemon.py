"""The daemon: runs every enabled alert on its schedule until told to stop.

- An alert never overlaps with itself: a run that comes due while the previous one
  still runs is skipped (counted in sqlsentinel_executions_skipped_total).
- ``daemon.max_concurrency`` bounds how many alerts run at once.
- Runs missed while the daemon was down (or while the machine slept) are not
  replayed: the next run is the next one after now.
- SIGTERM and SIGINT stop scheduling, let running executions finish within
  ``daemon.shutdown_grace`` and record the ones cut short; the exit code is 0.
- SIGHUP reloads the configuration; an invalid new one is reported and the old one
  keeps running.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import time
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlsentinel import __version__
from sqlsentinel.config import Alert, LoadedConfig, load_config
from sqlsentinel.database import AlertDatabase
from sqlsentinel.engine import Clock, Engine, SystemClock, make_executors
from sqlsentinel.errors import ConfigError, SentinelError, StateStoreError
from sqlsentinel.health import DatabaseProbe, SchedulerSnapshot
from sqlsentinel.logs import new_correlation
from sqlsentinel.masking import mask
from sqlsentinel.notify.base import Channel
from sqlsentinel.schedule import Schedule, schedule_for
from sqlsentinel.state import StateStore

if TYPE_CHECKING:
    from sqlsentinel.http import SentinelHTTPServer

log = logging.getLogger("sqlsentinel.daemon")

HOUSEKEEPING_EVERY = 15.0
PURGE_EVERY = 3600.0
MAX_IDLE_WAIT = 1.0
PROBE_TIMEOUT = 3.0


@dataclass
class Scheduler:
    """Which alerts are due when: pure bookkeeping, driven by explicit times."""

    schedules: dict[str, Schedule] = field(default_factory=dict)
    next_runs: dict[str, datetime] = field(default_factory=dict)

    def set_alerts(self, alerts: Iterable[Alert], now: datetime) -> None:
        """(Re)load the alerts; unchanged schedules keep their next run time."""
        schedules = {
            a.name: schedule_for(a.schedule, a.interval, a.timezone)
            for a in alerts
            if a.enabled
        }
        next_runs = {}
        for name, sched in schedules.items():
            if self.schedules.get(name) == sched and name in self.next_runs:
                next_runs[name] = self.next_runs[name]
            else:
                next_runs[name] = sched.next_after(now)
        self.schedules, self.next_runs = schedules, next_runs

    def due(self, now: datetime) -> list[tuple[str, datetime]]:
        """Alerts whose run time has come, with that time; each moves to its next run after now."""
        ready = sorted(
            (when, name) for name, when in self.next_runs.items() if when <= now
        )
        for when, name in ready:
            # Skip over runs that passed while we were not looking: no replay.
            self.next_runs[name] = self.schedules[name].next_after(max(when, now))
        return [(name, when) for when, name in ready]

    def next_wakeup(self) -> datetime | None:
        return min(self.next_runs.values(), default=None)

    @property
    def jobs_count(self) -> int:
        return len(self.schedules)


class Daemon:
    """Owns the event loop's work: scheduler, engine, HTTP server, signals."""

    def __init__(
        self,
        config_path: str,
        *,
        state_url: str | None = None,
        http_enabled: bool = True,
        http_host: str | None = None,
        http_port: int | None = None,
        clock: Clock | None = None,
        run_on_start: bool = False,
    ) -> None:
        self.config_path = config_path
        self.state_url_override = state_url
        self.http_enabled = http_enabled
        self.http_host, self.http_port = http_host, http_port
        self.clock: Clock = clock or SystemClock()
        self.run_on_start = run_on_start
        self.scheduler = Scheduler()
        self.running: dict[str, asyncio.Task[None]] = {}
        self.stopping = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self.last_heartbeat: datetime | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._probes: dict[str, tuple[AlertDatabase, DatabaseProbe]] = {}
        self._semaphore = asyncio.Semaphore(1)
        self._semaphore_limit = 0

    # -- lifecycle --------------------------------------------------------------

    async def run(self) -> int:
        """Run until a stop signal; return the process exit code."""
        from sqlsentinel.health import HealthMonitor
        from sqlsentinel.metrics import Metrics

        config = load_config(self.config_path)
        self.store = StateStore(config.state_url(self.state_url_override))
        try:
            await asyncio.to_thread(self.store.open)
        except StateStoreError as exc:
            # Keep running, unready and unhealthy, rather than crash-loop: the health
            # endpoints say why, and the store opens itself once the database answers.
            log.error(
                "state database unavailable at start; retrying",
                extra={"context": {"error": str(exc)}},
            )
        # The image bakes its git revision in; elsewhere it is simply unknown.
        revision = os.environ.get("SQLSENTINEL_REVISION") or "unknown"
        self.metrics = Metrics(version=__version__, revision=revision)
        self.monitor = HealthMonitor(version=__version__)
        self.executors = make_executors(config)
        self._apply_config(config)
        await self._restore_states()
        self.metrics.config_loaded()
        self.monitor.set_config_loaded(True)
        self.monitor.set_scheduler(self._snapshot)
        self._install_signals()
        await self.monitor.start()
        server = await self._start_http()
        log.info(
            "daemon started",
            extra={
                "context": {
                    "config": self.config_path,
                    "alerts": self.scheduler.jobs_count,
                    "state_db": self.store.display_url,
                    "version": __version__,
                }
            },
        )
        try:
            await self._loop()
        finally:
            await self._shutdown(server)
        return 0

    async def _restore_states(self) -> None:
        """Show the stored state of each alert in the metrics from the start."""
        try:
            states = await self.engine.in_state_thread(self.store.all_states)
        except SentinelError as exc:
            log.warning(
                "could not read alert states", extra={"context": {"error": str(exc)}}
            )
            return
        for name, state in states.items():
            self.metrics.set_state(name, state.status)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)

    def _request_stop(self, why: str = "stop requested") -> None:
        if not self.stopping.is_set():
            log.info("stopping", extra={"context": {"signal": why}})
        self.stopping.set()

    async def _start_http(self) -> SentinelHTTPServer | None:
        if not self.http_enabled:
            return None
        from sqlsentinel.http import SentinelHTTPServer

        server = SentinelHTTPServer(
            self.monitor, self.metrics, host=self.http_host, port=self.http_port
        )
        await server.start()
        return server

    # -- configuration --------------------------------------------------------

    def _apply_config(self, config: LoadedConfig) -> None:
        old: Engine | None = getattr(self, "engine", None)
        databases: dict[str, AlertDatabase] = {}
        channels: dict[str, Channel] = {}
        if old is not None:
            databases = {
                n: db
                for n, db in old.databases.items()
                if old.config.databases.get(n) == config.databases.get(n)
            }
            keys = {c.key for a in config.alerts for c in a.notify}
            channels = {k: ch for k, ch in old.channels.items() if k in keys}
        self.engine = Engine(
            config,
            self.store,
            metrics=self.metrics,
            clock=self.clock,
            reuse_databases=databases,
            reuse_channels=channels,
            executors=self.executors,
        )
        if old is not None:
            for name, db in old.databases.items():
                if name not in databases:
                    db.dispose()
            for key, channel in old.channels.items():
                if key not in channels:
                    self._spawn(channel.aclose())
        self.config = config
        limit = config.raw.daemon.max_concurrency
        if limit != self._semaphore_limit:
            self._semaphore, self._semaphore_limit = asyncio.Semaphore(limit), limit
        self.scheduler.set_alerts(config.alerts, self.clock.now())
        self.metrics.set_alerts(a.name for a in config.alerts)
        self.metrics.set_channels({ch.label for ch in self.engine.channels.values()})
        self.metrics.set_scheduler_jobs(self.scheduler.jobs_count)
        self._set_probes()

    def _set_probes(self) -> None:
        """Give the health monitor one guarded probe per database in use and per channel."""
        from sqlsentinel.health import blocking_probe

        engine, used = self.engine, {a.database for a in self.config.enabled_alerts}
        probes = {}
        for name, db in engine.databases.items():
            if name not in used:
                continue
            previous = self._probes.get(name)
            # Reuse the probe of an unchanged database so its one-at-a-time guard holds.
            if previous is not None and previous[0] is db:
                probes[name] = previous
            else:
                probes[name] = (
                    db,
                    blocking_probe(functools.partial(db.ping, PROBE_TIMEOUT)),
                )
        self._probes = probes
        if not hasattr(self, "_state_probe"):
            self._state_probe = blocking_probe(self.store.ping)
        self.monitor.set_probes(
            state_db=self._state_probe,
            databases={name: probe for name, (_, probe) in probes.items()},
            channels={
                _channel_name(engine, ch): ch.check for ch in engine.channels.values()
            },
        )

    async def reload(self) -> bool:
        """Load the configuration file again; keep the running one if the new one is invalid."""
        self.reload_requested.clear()
        try:
            config = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            self.metrics.config_reloaded(False)
            log.error(
                "config reload failed; keeping the running configuration",
                extra={"context": {"errors": [mask(str(i)) for i in exc.issues]}},
            )
            return False
        self._apply_config(config)
        self.metrics.config_reloaded(True)
        log.info(
            "config reloaded", extra={"context": {"alerts": self.scheduler.jobs_count}}
        )
        return True

    # -- the loop -------------------------------------------------------------

    async def _loop(self) -> None:
        last_housekeeping = 0.0
        last_purge = 0.0
        if self.run_on_start:
            self._launch([(a.name, None) for a in self.config.enabled_alerts])
        while not self.stopping.is_set():
            now = self.clock.now()
            self.last_heartbeat = now
            if self.reload_requested.is_set():
                await self.reload()
            self._launch(self.scheduler.due(now))
            mono = time.monotonic()
            if mono - last_housekeeping >= HOUSEKEEPING_EVERY:
                last_housekeeping = mono
                self._spawn(self._housekeeping(purge=mono - last_purge >= PURGE_EVERY))
                if mono - last_purge >= PURGE_EVERY:
                    last_purge = mono
            await self._wait(now)

    async def _wait(self, now: datetime) -> None:
        wake = self.scheduler.next_wakeup()
        delay = (
            MAX_IDLE_WAIT
            if wake is None
            else min(MAX_IDLE_WAIT, max(0.0, (wake - now).total_seconds()))
        )
        stop = asyncio.ensure_future(self.stopping.wait())
        reload = asyncio.ensure_future(self.reload_requested.wait())
        try:
            await asyncio.wait(
                {stop, reload},
                timeout=max(delay, 0.001),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stop.cancel()
            reload.cancel()

    def _launch(self, due: Sequence[tuple[str, datetime | None]]) -> None:
        if not due:
            return
        with new_correlation():
            for name, scheduled_for in due:
                try:
                    alert = self.config.alert(name)
                except KeyError:
                    continue
                if name in self.running:
                    self.metrics.execution_skipped(name)
                    log.warning(
                        "run skipped: the previous run is still going",
                        extra={"context": {"alert_name": name}},
                    )
                    continue
                task = asyncio.create_task(
                    self._run_one(alert, scheduled_for), name=f"alert:{name}"
                )
                self.running[name] = task
                task.add_done_callback(functools.partial(self._finished, name))

    def _finished(self, name: str, _task: asyncio.Task[None]) -> None:
        self.running.pop(name, None)

    async def _run_one(self, alert: Alert, scheduled_for: datetime | None) -> None:
        engine = self.engine
        async with self._semaphore:
            if scheduled_for is not None:
                try:
                    claimed = await engine.in_state_thread(
                        engine.store.claim_run, alert.name, scheduled_for
                    )
                except SentinelError as exc:
                    # Without the state database nothing can be recorded or owed, and
                    # other replicas cannot see the claim: skip rather than run blind.
                    log.error(
                        "run skipped: the state database is unavailable",
                        extra={
                            "context": {"alert_name": alert.name, "error": str(exc)}
                        },
                    )
                    return
                if not claimed:
                    log.info(
                        "run claimed by another daemon",
                        extra={"context": {"alert_name": alert.name}},
                    )
                    return
            trigger = "schedule" if scheduled_for is not None else "startup"
            await engine.execute(alert, trigger=trigger, scheduled_for=scheduled_for)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        """Run background work, keeping a reference so it is not collected midway."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _housekeeping(self, *, purge: bool) -> None:
        with new_correlation():
            try:
                await self.engine.reconcile()
                await self.engine.deliver_due()
                if purge:
                    removed = await self.engine.in_state_thread(
                        self.store.purge, self.config.raw.state.retention_days
                    )
                    if removed:
                        log.info("history purged", extra={"context": {"rows": removed}})
            except SentinelError as exc:
                log.error("housekeeping failed", extra={"context": {"error": str(exc)}})
            except Exception:
                log.exception("housekeeping crashed")

    def _snapshot(self) -> SchedulerSnapshot:
        return SchedulerSnapshot(
            running=not self.stopping.is_set(),
            jobs_count=self.scheduler.jobs_count,
            next_run=self.scheduler.next_wakeup(),
            last_heartbeat=self.last_heartbeat,
        )

    # -- stopping ----------------------------------------------------------------

    async def _shutdown(self, server: SentinelHTTPServer | None) -> None:
        self.monitor.set_shutting_down()
        grace = self.config.raw.daemon.shutdown_grace
        in_flight = [t for t in self.running.values() if not t.done()]
        if in_flight:
            log.info(
                "waiting for running alerts",
                extra={"context": {"count": len(in_flight), "grace_seconds": grace}},
            )
            _, pending = await asyncio.wait(in_flight, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
                log.warning(
                    "alerts cut short by shutdown",
                    extra={
                        "context": {"alerts": sorted(t.get_name() for t in pending)}
                    },
                )
        for task in list(self._background):
            task.cancel()
        if server is not None:
            await server.stop()
        await self.monitor.stop()
        await self.engine.aclose()
        for executor in self.executors:
            executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.store.close)
        log.info("daemon stopped")


def _channel_name(engine: Engine, channel: Channel) -> str:
    """The channel's label in /health, or its key when two channels share a label."""
    labels = [ch.label for ch in engine.channels.values()]
    return channel.label if labels.count(channel.label) == 1 else channel.key

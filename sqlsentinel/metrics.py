"""Prometheus metrics of the daemon, kept in its own registry (docs/api/metrics.md).

Every metric whose labels name an alert or a channel is pre-initialised when the
configuration is loaded, so `rate()` and `absent()` work before the first run, and
the series of alerts removed from the configuration are deleted, not left behind.
Execution ids never become labels: they belong in logs.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

OUTCOMES = ("ok", "alert", "error")
STATES = ("ok", "alert", "error")
DELIVERY_RESULTS = ("success", "failure")
RELOAD_RESULTS = ("success", "failure")

# Alert queries can be long warehouse scans: the buckets reach 30 minutes so p99
# stays measurable instead of vanishing into +Inf.
ALERT_DURATION_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
)
NOTIFICATION_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _Families(Collector):
    """Serve the daemon's metrics without `_created` series, plus computed gauges.

    `_created` samples double the series of every counter and histogram while
    Prometheus ignores them by default; dropping them here, per registry, avoids
    the process-wide switch PROMETHEUS_DISABLE_CREATED_SERIES.
    """

    def __init__(
        self, metrics: list[MetricWrapperBase], extra: Callable[[], list[Metric]]
    ):
        self._metrics = metrics
        self._extra = extra

    def collect(self) -> Iterator[Metric]:
        for wrapper in self._metrics:
            for family in wrapper.collect():
                family.samples = [
                    s for s in family.samples if not s.name.endswith("_created")
                ]
                yield family
        yield from self._extra()

    def describe(self) -> Iterator[Metric]:
        for wrapper in self._metrics:
            yield from wrapper.describe()
        yield from self._extra()


class Metrics:
    """Record what the daemon does as Prometheus series in `registry`."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        version: str,
        revision: str = "unknown",
        clock: Callable[[], float] = time.monotonic,
        process_collector: bool = True,
    ) -> None:
        # auto_describe: the process collector has no describe(), and without it
        # its names are unknown, so ?name[]=process_... would find nothing.
        self.registry = (
            registry if registry is not None else CollectorRegistry(auto_describe=True)
        )
        self._clock = clock
        self._started = clock()
        self._build = {
            "version": version,
            "revision": revision,
            "python_version": platform.python_version(),
        }
        self._lock = threading.Lock()
        self._alerts: set[str] | None = None  # None until set_alerts: accept any name
        self._channels: set[str] = set()
        self._owed: set[str] = set()
        self._create()
        self.registry.register(_Families(self._wrappers(), self._computed))
        if process_collector:
            ProcessCollector(registry=self.registry)

    def _create(self) -> None:
        """Build the metric objects, unregistered: _Families exposes them."""
        self.alerts = Counter(
            "sqlsentinel_alerts",
            "Alert executions by outcome.",
            ["alert_name", "status"],
            registry=None,
        )
        self.alert_duration = Histogram(
            "sqlsentinel_alert_duration_seconds",
            "Time an alert execution took.",
            ["alert_name"],
            buckets=ALERT_DURATION_BUCKETS,
            registry=None,
        )
        self.last_run = Gauge(
            "sqlsentinel_alert_last_run_timestamp_seconds",
            "Unix time at which the alert's last execution finished.",
            ["alert_name"],
            registry=None,
        )
        self.last_success = Gauge(
            "sqlsentinel_alert_last_success_timestamp_seconds",
            "Unix time at which the alert's query last ran without error.",
            ["alert_name"],
            registry=None,
        )
        self.alert_state = Gauge(
            "sqlsentinel_alert_state",
            "1 for the alert's current state (ok, alert, error), 0 for the others.",
            ["alert_name", "state"],
            registry=None,
        )
        self.skipped = Counter(
            "sqlsentinel_executions_skipped",
            "Executions skipped because the previous one was still running.",
            ["alert_name"],
            registry=None,
        )
        self._create_delivery_metrics()
        self._create_daemon_metrics()

    def _create_delivery_metrics(self) -> None:
        self.notifications = Counter(
            "sqlsentinel_notifications",
            "Notification delivery attempts by result.",
            ["channel", "status"],
            registry=None,
        )
        self.notification_duration = Histogram(
            "sqlsentinel_notification_duration_seconds",
            "Time one notification delivery attempt took.",
            ["channel"],
            buckets=NOTIFICATION_DURATION_BUCKETS,
            registry=None,
        )
        self.owed = Gauge(
            "sqlsentinel_notifications_owed",
            "Notifications owed to a channel and not yet delivered.",
            ["channel"],
            registry=None,
        )

    def _create_daemon_metrics(self) -> None:
        self.scheduler_jobs = Gauge(
            "sqlsentinel_scheduler_jobs",
            "Alert jobs the scheduler holds.",
            registry=None,
        )
        self.reloads = Counter(
            "sqlsentinel_config_reloads",
            "Configuration reloads by result.",
            ["result"],
            registry=None,
        )
        self.last_reload = Gauge(
            "sqlsentinel_config_last_reload_success_timestamp_seconds",
            "Unix time at which the configuration was last loaded successfully.",
            registry=None,
        )
        for result in RELOAD_RESULTS:
            self.reloads.labels(result)

    def _wrappers(self) -> list[MetricWrapperBase]:
        return [
            self.alerts,
            self.alert_duration,
            self.last_run,
            self.last_success,
            self.alert_state,
            self.skipped,
            self.notifications,
            self.notification_duration,
            self.owed,
            self.scheduler_jobs,
            self.reloads,
            self.last_reload,
        ]

    def _computed(self) -> list[Metric]:
        """Gauges whose value is computed at scrape time."""
        uptime = GaugeMetricFamily(
            "sqlsentinel_uptime_seconds", "Seconds since the daemon started."
        )
        uptime.add_metric([], self._clock() - self._started)
        build = GaugeMetricFamily(
            "sqlsentinel_build_info",
            "Build of the running daemon; the value is 1.",
            labels=list(self._build),
        )
        build.add_metric(list(self._build.values()), 1)
        return [uptime, build]

    def set_alerts(self, names: Iterable[str]) -> None:
        """Pre-initialise the series of configured alerts and delete the others."""
        wanted = set(names)
        with self._lock:
            gone = (self._alerts or set()) - wanted
            self._alerts = wanted
        for name in gone:
            self._remove_alert(name)
        for name in sorted(wanted):  # sorted: a stable, readable exposition order
            self._touch_alert(name)

    def _touch_alert(self, name: str) -> None:
        for outcome in OUTCOMES:
            self.alerts.labels(name, outcome)
        for state in STATES:
            self.alert_state.labels(name, state)
        self.alert_duration.labels(name)
        self.skipped.labels(name)

    def _remove_alert(self, name: str) -> None:
        for outcome in OUTCOMES:
            self.alerts.remove(name, outcome)
        for state in STATES:
            self.alert_state.remove(name, state)
        for metric in (
            self.alert_duration,
            self.skipped,
            self.last_run,
            self.last_success,
        ):
            metric.remove(name)

    def _known_alert(self, name: str) -> bool:
        # An execution that finishes after its alert left the configuration must
        # not bring the deleted series back.
        with self._lock:
            return self._alerts is None or name in self._alerts

    def execution_finished(
        self,
        alert_name: str,
        outcome: str,
        state: str,
        duration_s: float,
        finished_at: float,
        success: bool,
    ) -> None:
        """Record a finished execution: outcome ok|alert|error, state OK|ALERT|ERROR."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        if not self._known_alert(alert_name):
            return
        self.alerts.labels(alert_name, outcome).inc()
        self.alert_duration.labels(alert_name).observe(max(duration_s, 0.0))
        self.last_run.labels(alert_name).set(finished_at)
        if success:
            self.last_success.labels(alert_name).set(finished_at)
        self.set_state(alert_name, state)

    def set_state(self, alert_name: str, state: str) -> None:
        """Set the alert's state gauge (also used to restore state at startup)."""
        current = state.lower()
        if current not in STATES:
            raise ValueError(f"state must be one of OK, ALERT, ERROR, not {state!r}")
        if not self._known_alert(alert_name):
            return
        for each in STATES:
            self.alert_state.labels(alert_name, each).set(1 if each == current else 0)

    def execution_skipped(self, alert_name: str) -> None:
        """Count an execution skipped because the previous one still runs."""
        if self._known_alert(alert_name):
            self.skipped.labels(alert_name).inc()

    def set_channels(self, channels: Iterable[str]) -> None:
        """Pre-initialise the series of configured channels and delete the others."""
        wanted = set(channels)
        with self._lock:
            gone, self._channels = self._channels - wanted, wanted
        for channel in gone:
            for result in DELIVERY_RESULTS:
                self.notifications.remove(channel, result)
            self.notification_duration.remove(channel)
            self.owed.remove(channel)
        for channel in sorted(wanted):
            for result in DELIVERY_RESULTS:
                self.notifications.labels(channel, result)
            self.notification_duration.labels(channel)
            self.owed.labels(channel)

    def notification_delivered(
        self, channel: str, success: bool, duration_s: float
    ) -> None:
        """Record one delivery attempt to a channel."""
        result = "success" if success else "failure"
        self.notifications.labels(channel, result).inc()
        self.notification_duration.labels(channel).observe(max(duration_s, 0.0))

    def set_owed(self, owed_by_channel: Mapping[str, int]) -> None:
        """Set the owed counts; configured channels missing from the mapping owe 0."""
        with self._lock:
            configured = set(self._channels)
            previous, self._owed = self._owed, set(owed_by_channel)
        for channel in previous - set(owed_by_channel):
            if channel in configured:
                self.owed.labels(channel).set(0)
            else:
                self.owed.remove(channel)
        for channel, count in owed_by_channel.items():
            self.owed.labels(channel).set(count)

    def set_scheduler_jobs(self, count: int) -> None:
        """Set the number of alert jobs the scheduler holds."""
        self.scheduler_jobs.set(count)

    def config_loaded(self, at: float | None = None) -> None:
        """Record the first successful load at startup, which is not a reload."""
        self.last_reload.set(time.time() if at is None else at)

    def config_reloaded(self, success: bool, at: float | None = None) -> None:
        """Count a reload; a successful one also sets the last-success timestamp."""
        self.reloads.labels("success" if success else "failure").inc()
        if success:
            self.config_loaded(at)

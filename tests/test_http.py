"""Health and metrics endpoints on a real aiohttp server on loopback; healthcheck."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import gzip
import json
import logging
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import make_mocked_request
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from sqlsentinel import http
from sqlsentinel.health import HealthMonitor, SchedulerSnapshot, engine_probe
from sqlsentinel.http import SentinelHTTPServer
from sqlsentinel.metrics import Metrics
from sqlsentinel.notify.base import ChannelCheck
from sqlsentinel.probe import healthcheck

PROMTOOL_MISSING = (
    "promtool not found: install it with "
    "`apt-get install -y --no-install-recommends prometheus`"
)
HEALTH_DOC = Path(__file__).resolve().parents[1] / "docs" / "api" / "health-checks.md"
ODD_NAMES = ['orders "late" \\ west', "line\nbreak", "café ✓ 注文"]


class FakeScheduler:
    """The scheduler's self-report, set by the test."""

    def __init__(self) -> None:
        self.running = True
        self.jobs_count = 3
        self.last_heartbeat: datetime | None = datetime.now(UTC)

    def __call__(self) -> SchedulerSnapshot:
        next_run = datetime(2030, 1, 1, tzinfo=UTC)
        return SchedulerSnapshot(
            self.running, self.jobs_count, next_run, self.last_heartbeat
        )


class Probe:
    """A database probe that counts its calls and fails while `error` is set."""

    def __init__(self, error: str | None = None) -> None:
        self.calls = 0
        self.error = error

    async def __call__(self) -> None:
        self.calls += 1
        if self.error:
            raise ConnectionError(self.error)


class ChannelProbe:
    def __init__(self, check: ChannelCheck) -> None:
        self.calls = 0
        self.check = check

    async def __call__(self) -> ChannelCheck:
        self.calls += 1
        return self.check


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def documented_example(path: str) -> dict[str, Any]:
    """The first JSON example under the doc's heading for `path`."""
    section = HEALTH_DOC.read_text().split(f"## `GET {path}`", 1)[1]
    block = section.split("```json", 1)[1].split("```", 1)[0]
    example: dict[str, Any] = json.loads(block)
    return example


def shape(value: Any) -> Any:
    """The nested keys of a JSON value, to compare structure and not values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    return None


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(PROMTOOL_MISSING)
    return path


@pytest.fixture
def scheduler() -> FakeScheduler:
    return FakeScheduler()


@pytest.fixture
def probes() -> dict[str, Any]:
    return {
        "state": Probe(),
        "warehouse": Probe(),
        "crm": Probe(),
        "slack": ChannelProbe(ChannelCheck("healthy", "configured")),
    }


@pytest.fixture
async def monitor(
    scheduler: FakeScheduler, probes: dict[str, Any]
) -> AsyncIterator[HealthMonitor]:
    monitor = HealthMonitor(version="9.9.9", interval=60.0, check_timeout=2.0)
    monitor.set_probes(
        state_db=probes["state"],
        databases={"warehouse": probes["warehouse"], "crm": probes["crm"]},
        channels={"slack": probes["slack"]},
    )
    monitor.set_scheduler(scheduler)
    monitor.set_config_loaded(True)
    await monitor.run_checks_now()
    yield monitor
    await monitor.stop()


@pytest.fixture
def metrics() -> Metrics:
    metrics = Metrics(version="9.9.9", revision="abc")
    metrics.set_alerts(ODD_NAMES)
    metrics.set_channels(["slack"])
    metrics.execution_finished(
        ODD_NAMES[0], "alert", "ALERT", 3.0, 1_700_000_000.0, True
    )
    return metrics


@pytest.fixture
async def server(
    monitor: HealthMonitor, metrics: Metrics
) -> AsyncIterator[SentinelHTTPServer]:
    server = SentinelHTTPServer(monitor, metrics, host="127.0.0.1", port=0)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get_json(
    client: aiohttp.ClientSession, url: str
) -> tuple[int, dict[str, Any]]:
    async with client.get(url) as response:
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        return response.status, await response.json()


class TestHealth:
    async def test_healthy_daemon_reports_every_check(
        self, server: SentinelHTTPServer, client: aiohttp.ClientSession
    ) -> None:
        status, body = await get_json(client, server.url("/health"))

        assert status == 200
        assert body["status"] == "healthy"
        assert body["version"] == "9.9.9"
        assert body["uptime_seconds"] >= 0
        assert datetime.fromisoformat(body["timestamp"]).utcoffset() == timedelta(0)
        checks = body["checks"]
        state = checks["database"]["state_database"]
        assert set(state) == {
            "status",
            "latency_ms",
            "message",
            "checked_at",
            "age_seconds",
        }
        assert state["status"] == "healthy"
        assert set(checks["database"]["alert_databases"]) == {"warehouse", "crm"}
        assert checks["scheduler"]["jobs_count"] == 3
        assert checks["scheduler"]["next_run"] == "2030-01-01T00:00:00.000Z"
        assert checks["notifications"]["channels"]["slack"]["message"] == "configured"
        assert checks["config"] == {"status": "healthy", "loaded": True}

    async def test_one_alert_database_down_is_degraded_with_200(
        self,
        monitor: HealthMonitor,
        probes: dict[str, Any],
        server: SentinelHTTPServer,
        client: aiohttp.ClientSession,
    ) -> None:
        probes["crm"].error = "connection refused"
        await monitor.run_checks_now()

        status, body = await get_json(client, server.url("/health"))
        ready, _ = await get_json(client, server.url("/health/ready"))

        assert (status, body["status"], ready) == (200, "degraded", 200)
        crm = body["checks"]["database"]["alert_databases"]["crm"]
        assert crm == crm | {
            "status": "unhealthy",
            "message": "ConnectionError: connection refused",
        }
        assert body["checks"]["database"]["status"] == "degraded"

    async def test_failing_channel_is_degraded_with_200(
        self,
        monitor: HealthMonitor,
        probes: dict[str, Any],
        server: SentinelHTTPServer,
        client: aiohttp.ClientSession,
    ) -> None:
        probes["slack"].check = ChannelCheck("unhealthy", "webhook answered 404")
        await monitor.run_checks_now()

        status, body = await get_json(client, server.url("/health"))

        assert (status, body["status"]) == (200, "degraded")
        slack = body["checks"]["notifications"]["channels"]["slack"]
        assert (slack["status"], slack["message"]) == (
            "unhealthy",
            "webhook answered 404",
        )

    async def test_state_database_down_is_unhealthy_and_not_ready(
        self,
        monitor: HealthMonitor,
        probes: dict[str, Any],
        server: SentinelHTTPServer,
        client: aiohttp.ClientSession,
    ) -> None:
        probes["state"].error = "could not connect"
        await monitor.run_checks_now()

        health, body = await get_json(client, server.url("/health"))
        ready, ready_body = await get_json(client, server.url("/health/ready"))
        live, _ = await get_json(client, server.url("/health/live"))

        assert (health, ready, live) == (503, 503, 200)
        assert body["status"] == "unhealthy"
        assert ready_body["reasons"] == [
            "state database: ConnectionError: could not connect"
        ]

    async def test_stale_heartbeat_fails_health_and_liveness(
        self,
        scheduler: FakeScheduler,
        server: SentinelHTTPServer,
        client: aiohttp.ClientSession,
    ) -> None:
        scheduler.last_heartbeat = datetime.now(UTC) - timedelta(seconds=120)

        health, body = await get_json(client, server.url("/health"))
        live, _ = await get_json(client, server.url("/health/live"))

        assert (health, live) == (503, 503)
        assert body["checks"]["scheduler"]["message"] == "no heartbeat for over 30 s"
        assert body["checks"]["scheduler"]["heartbeat_age_seconds"] >= 120

    async def test_stopped_scheduler_fails_health_and_readiness_not_liveness(
        self,
        scheduler: FakeScheduler,
        server: SentinelHTTPServer,
        client: aiohttp.ClientSession,
    ) -> None:
        scheduler.running = False

        codes = [
            (await get_json(client, server.url(path)))[0]
            for path in ("/health", "/health/ready", "/health/live")
        ]

        assert codes == [503, 503, 200]

    async def test_shutting_down_fails_readiness_only(
        self,
        monitor: HealthMonitor,
        server: SentinelHTTPServer,
        client: aiohttp.ClientSession,
    ) -> None:
        monitor.set_shutting_down()

        ready, body = await get_json(client, server.url("/health/ready"))
        live, _ = await get_json(client, server.url("/health/live"))

        assert (ready, live) == (503, 200)
        assert body["reasons"] == ["shutting down"]

    async def test_configuration_not_loaded_is_not_ready(
        self,
        monitor: HealthMonitor,
        server: SentinelHTTPServer,
        client: aiohttp.ClientSession,
    ) -> None:
        monitor.set_config_loaded(False)

        ready, body = await get_json(client, server.url("/health/ready"))
        health, _ = await get_json(client, server.url("/health"))

        assert (ready, health) == (503, 503)
        assert body["reasons"] == ["configuration not loaded"]

    async def test_probe_storm_causes_no_probe_calls(
        self,
        probes: dict[str, Any],
        server: SentinelHTTPServer,
        client: aiohttp.ClientSession,
    ) -> None:
        before = [p.calls for p in probes.values()]
        paths = ["/health", "/health/ready", "/health/live"]

        answers = await asyncio.gather(
            *(get_json(client, server.url(paths[i % 3])) for i in range(200))
        )

        assert {status for status, _ in answers} == {200}
        assert [p.calls for p in probes.values()] == before

    async def test_endpoints_answer_while_a_check_hangs_and_the_check_times_out(
        self, scheduler: FakeScheduler, client: aiohttp.ClientSession
    ) -> None:
        entered, release = asyncio.Event(), asyncio.Event()

        async def hanging() -> None:
            entered.set()
            await release.wait()

        monitor = HealthMonitor(version="1", check_timeout=0.05)
        monitor.set_probes(state_db=hanging, databases={}, channels={})
        monitor.set_scheduler(scheduler)
        monitor.set_config_loaded(True)
        server = SentinelHTTPServer(
            monitor, Metrics(version="1"), host="127.0.0.1", port=0
        )
        await server.start()
        try:
            round_ = asyncio.create_task(monitor.run_checks_now())
            await entered.wait()
            during, _ = await get_json(client, server.url("/health/ready"))
            await round_
            after, body = await get_json(client, server.url("/health/ready"))
        finally:
            await server.stop()

        assert not release.is_set()
        assert (during, after) == (503, 503)
        assert body["reasons"] == ["state database: no answer within 0.05 s"]

    async def test_secrets_in_probe_errors_are_masked(
        self,
        monitor: HealthMonitor,
        probes: dict[str, Any],
        server: SentinelHTTPServer,
        client: aiohttp.ClientSession,
    ) -> None:
        probes["warehouse"].error = "postgresql://app:hunter2@db.example.com/x refused"
        await monitor.run_checks_now()

        async with client.get(server.url("/health")) as response:
            text = await response.text()

        assert "hunter2" not in text
        assert "app:***@db.example.com" in text

    @pytest.mark.parametrize("path", ["/health", "/health/live", "/health/ready"])
    async def test_documented_examples_have_the_fields_served(
        self,
        path: str,
        monitor: HealthMonitor,
        server: SentinelHTTPServer,
        client: aiohttp.ClientSession,
    ) -> None:
        example = documented_example(path)
        monitor.set_probes(
            state_db=Probe(),
            databases={"warehouse": Probe(), "crm": Probe()},
            channels={"ops-slack": ChannelProbe(ChannelCheck("healthy", "configured"))},
        )
        await monitor.run_checks_now()

        _, body = await get_json(client, server.url(path))

        assert shape(body) == shape(example)


class TestMonitor:
    async def test_results_go_stale_when_checks_stop(
        self, scheduler: FakeScheduler
    ) -> None:
        clock = FakeClock()
        monitor = HealthMonitor(
            version="1", interval=10.0, check_timeout=3.0, clock=clock
        )
        monitor.set_probes(state_db=Probe(), databases={}, channels={})
        monitor.set_scheduler(scheduler)
        monitor.set_config_loaded(True)
        await monitor.run_checks_now()
        fresh, _ = monitor.health()

        clock.now += monitor.stale_after + 1
        stale, body = monitor.health()

        assert (fresh, stale) == (200, 503)
        assert body["checks"]["database"]["state_database"]["message"].startswith(
            "last check 34 s ago: stale"
        )

    async def test_concurrent_rounds_are_shared(self, monitor: HealthMonitor) -> None:
        probe = Probe()
        monitor.set_probes(state_db=probe, databases={}, channels={})

        await asyncio.gather(*(monitor.run_checks_now() for _ in range(10)))

        assert probe.calls == 1

    async def test_reload_drops_removed_probes_and_checks_new_ones(
        self, monitor: HealthMonitor
    ) -> None:
        new = Probe()
        monitor.set_probes(state_db=Probe(), databases={"dwh": new}, channels={})
        status_before, before = monitor.health()

        await monitor.run_checks_now()
        _, after = monitor.health()

        # The state database keeps its last result across the reload: no flap.
        assert status_before == 200
        assert set(before["checks"]["database"]["alert_databases"]) == {"dwh"}
        dwh_before = before["checks"]["database"]["alert_databases"]["dwh"]
        assert dwh_before["message"] == "not checked yet"
        assert (
            after["checks"]["database"]["alert_databases"]["dwh"]["status"] == "healthy"
        )
        assert before["checks"]["notifications"]["channels"] == {}

    async def test_background_task_checks_again_when_probes_change(
        self, scheduler: FakeScheduler
    ) -> None:
        monitor = HealthMonitor(version="1", interval=3600.0)
        first, checked = Probe(), asyncio.Event()

        async def second() -> None:
            checked.set()

        monitor.set_probes(state_db=first, databases={}, channels={})
        await monitor.start()
        try:
            started_calls = first.calls
            monitor.set_probes(state_db=second, databases={}, channels={})
            await checked.wait()
        finally:
            await monitor.stop()

        assert started_calls == 1

    async def test_failed_check_is_logged_once_per_change(
        self,
        monitor: HealthMonitor,
        probes: dict[str, Any],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        probes["crm"].error = "down"
        with caplog.at_level(logging.INFO, logger="sqlsentinel.health"):
            await monitor.run_checks_now()
            await monitor.run_checks_now()
            probes["crm"].error = None
            await monitor.run_checks_now()

        assert [r.getMessage() for r in caplog.records] == [
            "health check failed",
            "health check recovered",
        ]
        assert caplog.records[0].context["database"] == "crm"  # type: ignore[attr-defined]


class TCPProxy:
    """A loopback TCP proxy in front of the real PostgreSQL, to cut and restore it."""

    def __init__(
        self, port: int, target: tuple[str, int] = ("127.0.0.1", 5432)
    ) -> None:
        self.port = port
        self.target = target
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer)
            )
        finally:
            for each in (writer, up_writer):
                self._writers.discard(each)
                each.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()


@pytest.fixture
def pg_engine_via_proxy() -> Iterator[tuple[sa.Engine, TCPProxy]]:
    proxy = TCPProxy(free_port())
    engine = sa.create_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/test",
        connect_args={"connect_timeout": 2},
        pool_pre_ping=True,
    )
    yield engine, proxy
    engine.dispose()


@pytest.mark.postgres
async def test_real_postgres_outage_and_recovery(
    pg_engine_via_proxy: tuple[sa.Engine, TCPProxy],
    scheduler: FakeScheduler,
    client: aiohttp.ClientSession,
) -> None:
    """Unreachable state database: 503; back: 200; cut again: 503 (bounded rounds)."""
    engine, proxy = pg_engine_via_proxy
    monitor = HealthMonitor(version="1", check_timeout=5.0)
    monitor.set_probes(state_db=engine_probe(engine), databases={}, channels={})
    monitor.set_scheduler(scheduler)
    monitor.set_config_loaded(True)
    server = SentinelHTTPServer(monitor, Metrics(version="1"), host="127.0.0.1", port=0)
    await server.start()

    async def codes_after_rounds(expected: int) -> tuple[int, int, dict[str, Any]]:
        for _ in range(3):
            await monitor.run_checks_now()
            health, body = await get_json(client, server.url("/health"))
            if health == expected:
                break
        ready, _ = await get_json(client, server.url("/health/ready"))
        return health, ready, body

    try:
        closed = await codes_after_rounds(503)
        await proxy.start()
        recovered = await codes_after_rounds(200)
        await proxy.stop()
        cut = await codes_after_rounds(503)
    finally:
        await server.stop()
        await monitor.stop()

    assert closed[:2] == (503, 503)
    state = closed[2]["checks"]["database"]["state_database"]
    assert state["message"].startswith("OperationalError: ")
    assert "refused" in state["message"]
    assert recovered[:2] == (200, 200)
    assert cut[:2] == (503, 503)


class TestMetricsEndpoint:
    async def test_classic_text_passes_promtool_and_parses_back(
        self, server: SentinelHTTPServer, client: aiohttp.ClientSession
    ) -> None:
        async with client.get(server.url("/metrics")) as response:
            content_type = response.headers["Content-Type"]
            body = await response.read()

        checked = subprocess.run(
            [promtool(), "check", "metrics"], input=body, capture_output=True
        )

        assert content_type == "text/plain; version=0.0.4; charset=utf-8"
        assert checked.returncode == 0, checked.stdout + checked.stderr
        names = {
            s.labels["alert_name"]
            for family in text_string_to_metric_families(body.decode())
            if family.name == "sqlsentinel_alert_state"
            for s in family.samples
        }
        assert names == set(ODD_NAMES)

    async def test_openmetrics_is_negotiated_and_ends_with_eof(
        self, server: SentinelHTTPServer, client: aiohttp.ClientSession
    ) -> None:
        accept = "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        async with client.get(
            server.url("/metrics"), headers={"Accept": accept}
        ) as response:
            content_type = response.headers["Content-Type"]
            text = await response.text()

        families = {f.name for f in parse_openmetrics(text)}

        assert content_type.startswith("application/openmetrics-text; version=1.0.0")
        assert text.endswith("# EOF\n")
        assert {"sqlsentinel_alerts", "sqlsentinel_build_info"} <= families

    async def test_text_1_0_0_is_negotiated(
        self, server: SentinelHTTPServer, client: aiohttp.ClientSession
    ) -> None:
        headers = {"Accept": "text/plain;version=1.0.0"}
        async with client.get(server.url("/metrics"), headers=headers) as response:
            assert response.headers["Content-Type"].startswith(
                "text/plain; version=1.0.0"
            )

    async def test_gzip_when_asked(self, server: SentinelHTTPServer) -> None:
        async with (
            aiohttp.ClientSession(auto_decompress=False) as raw,
            raw.get(
                server.url("/metrics"), headers={"Accept-Encoding": "gzip"}
            ) as response,
        ):
            encoding = response.headers.get("Content-Encoding")
            body = gzip.decompress(await response.read())

        assert encoding == "gzip"
        assert b"sqlsentinel_build_info" in body

    async def test_name_filter(
        self, server: SentinelHTTPServer, client: aiohttp.ClientSession
    ) -> None:
        url = server.url("/metrics?name[]=sqlsentinel_scheduler_jobs")
        async with client.get(url) as response:
            text = await response.text()

        assert {f.name for f in text_string_to_metric_families(text)} == {
            "sqlsentinel_scheduler_jobs"
        }

    async def test_concurrent_scrapes_all_get_the_full_output(
        self, server: SentinelHTTPServer, client: aiohttp.ClientSession
    ) -> None:
        async def scrape() -> str:
            async with client.get(server.url("/metrics")) as response:
                return await response.text()

        bodies = await asyncio.gather(*(scrape() for _ in range(20)))

        assert all(body.count("# TYPE") == bodies[0].count("# TYPE") for body in bodies)
        assert bodies[0].count("# TYPE") == 20

    async def test_name_filter_finds_process_metrics(
        self, server: SentinelHTTPServer, client: aiohttp.ClientSession
    ) -> None:
        url = server.url("/metrics?name[]=process_cpu_seconds_total")
        async with client.get(url) as response:
            text = await response.text()

        assert {f.name for f in text_string_to_metric_families(text)} == {
            "process_cpu_seconds"
        }

    async def test_every_answer_carries_its_age(
        self, server: SentinelHTTPServer, client: aiohttp.ClientSession
    ) -> None:
        async with client.get(server.url("/metrics")) as response:
            age = float(response.headers[http.METRICS_AGE_HEADER])

        assert 0 <= age < http.METRICS_MAX_STALE

    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            ("gzip, deflate", True),
            ("deflate, gzip;q=0.5", True),
            ("gzip;q=0", False),
            ("identity", False),
            ("", False),
        ],
    )
    def test_accept_encoding_parsing(self, header: str, expected: bool) -> None:
        assert http.accepts_gzip(header) is expected


class CountingCollector(Collector):
    """A collector in the daemon's registry: one collect() call per encoding."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: str | None = None
        self.gc_enabled: bool | None = None

    def collect(self) -> Iterator[Metric]:
        self.calls += 1
        self.gc_enabled = gc.isenabled()
        if self.error:
            raise RuntimeError(self.error)
        yield from self.describe()

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("test_probe", "Present in every encoding.", value=1)


class Scrape:
    """One /metrics answer: status, headers and body (gzip left as is)."""

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def age(self) -> str:
        return str(self.headers[http.METRICS_AGE_HEADER])

    def value(self, name: str, **labels: str) -> float | None:
        """A sample's value parsed from a classic text body, None when absent."""
        for family in text_string_to_metric_families(self.body.decode()):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return None


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def collector(metrics: Metrics) -> CountingCollector:
    counting = CountingCollector()
    metrics.registry.register(counting)
    return counting


@pytest.fixture
async def cached(
    monitor: HealthMonitor, metrics: Metrics, clock: FakeClock
) -> AsyncIterator[SentinelHTTPServer]:
    """A server whose /metrics cache runs on a clock the test moves."""
    server = SentinelHTTPServer(monitor, metrics, host="127.0.0.1", port=0, clock=clock)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def raw() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that leaves gzip bodies compressed."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def scrape(
    session: aiohttp.ClientSession, server: SentinelHTTPServer, **headers: str
) -> Scrape:
    accept = headers.pop("accept", "text/plain")
    encoding = headers.pop("encoding", "identity")
    sent = {"Accept": accept, "Accept-Encoding": encoding}
    async with session.get(server.url("/metrics"), headers=sent) as response:
        return Scrape(response.status, response.headers, await response.read())


ERRORS = "sqlsentinel_alerts_total"
LATE = {"alert_name": ODD_NAMES[1], "status": "error"}


def fail_once(metrics: Metrics) -> None:
    """Count one failed execution of ODD_NAMES[1] (its error counter goes 0 -> 1)."""
    metrics.execution_finished(ODD_NAMES[1], "error", "ERROR", 1.0, 2e9, False)


class TestMetricsCache:
    async def test_nothing_is_encoded_while_nobody_scrapes(
        self,
        collector: CountingCollector,
        cached: SentinelHTTPServer,
        clock: FakeClock,
        raw: aiohttp.ClientSession,
    ) -> None:
        await cached.expositions.wait_idle()
        at_start = collector.calls
        await scrape(raw, cached)
        clock.now += 3600

        await asyncio.sleep(0)
        await cached.expositions.wait_idle()

        assert (at_start, collector.calls) == (0, 1)

    async def test_scrape_within_the_window_gets_the_cached_body(
        self,
        metrics: Metrics,
        collector: CountingCollector,
        cached: SentinelHTTPServer,
        clock: FakeClock,
        raw: aiohttp.ClientSession,
    ) -> None:
        first = await scrape(raw, cached)
        fail_once(metrics)
        clock.now += http.METRICS_MAX_AGE / 2

        second = await scrape(raw, cached)
        await cached.expositions.wait_idle()

        assert second.body == first.body
        assert second.value(ERRORS, **LATE) == 0
        assert (first.age, second.age) == ("0.000", "0.500")
        assert collector.calls == 1

    async def test_scrape_after_the_staleness_bound_reflects_a_changed_counter(
        self,
        metrics: Metrics,
        collector: CountingCollector,
        cached: SentinelHTTPServer,
        clock: FakeClock,
        raw: aiohttp.ClientSession,
    ) -> None:
        first = await scrape(raw, cached)
        fail_once(metrics)
        clock.now += http.METRICS_MAX_STALE

        second = await scrape(raw, cached)

        assert (first.value(ERRORS, **LATE), second.value(ERRORS, **LATE)) == (0, 1)
        assert second.age == "0.000"
        assert collector.calls == 2

    async def test_stale_body_is_served_at_once_while_a_new_one_is_made(
        self,
        metrics: Metrics,
        collector: CountingCollector,
        cached: SentinelHTTPServer,
        clock: FakeClock,
        raw: aiohttp.ClientSession,
    ) -> None:
        await scrape(raw, cached)
        fail_once(metrics)
        clock.now += 2.0

        stale = await scrape(raw, cached)
        await cached.expositions.wait_idle()
        fresh = await scrape(raw, cached)

        assert (stale.value(ERRORS, **LATE), stale.age) == (0, "2.000")
        assert (fresh.value(ERRORS, **LATE), fresh.age) == (1, "0.000")
        assert collector.calls == 2

    async def test_concurrent_scrapes_trigger_one_encoding_per_variant(
        self,
        collector: CountingCollector,
        cached: SentinelHTTPServer,
        raw: aiohttp.ClientSession,
    ) -> None:
        plain = [scrape(raw, cached) for _ in range(15)]
        zipped = [scrape(raw, cached, encoding="gzip") for _ in range(15)]

        answers = await asyncio.gather(*plain, *zipped)

        assert {a.status for a in answers} == {200}
        assert len({a.body for a in answers[:15]}) == 1
        assert len({a.body for a in answers[15:]}) == 1
        assert {a.headers.get("Content-Encoding") for a in answers[15:]} == {"gzip"}
        assert b"test_probe 1.0" in gzip.decompress(answers[15].body)
        assert collector.calls == 2

    async def test_formats_are_cached_apart_and_openmetrics_keeps_its_eof(
        self,
        collector: CountingCollector,
        cached: SentinelHTTPServer,
        raw: aiohttp.ClientSession,
    ) -> None:
        openmetrics = "application/openmetrics-text;version=1.0.0"

        first = await scrape(raw, cached, accept=openmetrics, encoding="gzip")
        again = await scrape(raw, cached, accept=openmetrics, encoding="gzip")
        text = await scrape(raw, cached)

        for answer in (first, again):
            assert answer.headers["Content-Type"].startswith(
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            )
            assert gzip.decompress(answer.body).endswith(b"# EOF\n")
        assert text.headers["Content-Type"] == (
            "text/plain; version=0.0.4; charset=utf-8"
        )
        assert b"# EOF" not in text.body
        assert collector.calls == 2

    async def test_failed_encoding_is_an_error_and_no_body_older_than_the_bound(
        self,
        collector: CountingCollector,
        cached: SentinelHTTPServer,
        clock: FakeClock,
        raw: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        await scrape(raw, cached)
        collector.error = "collector broke"
        clock.now += 2.0

        with caplog.at_level(logging.ERROR, logger="sqlsentinel.http"):
            within = await scrape(raw, cached)
            await cached.expositions.wait_idle()
        clock.now += http.METRICS_MAX_STALE
        beyond = await scrape(raw, cached)
        collector.error = None
        recovered = await scrape(raw, cached)

        assert (within.status, within.age) == (200, "2.000")
        assert "RuntimeError: collector broke" in caplog.records[0].context["error"]  # type: ignore[attr-defined]
        assert beyond.status == 500
        assert (recovered.status, recovered.age) == (200, "0.000")

    async def test_cached_variants_are_bounded(
        self,
        collector: CountingCollector,
        cached: SentinelHTTPServer,
        clock: FakeClock,
        client: aiohttp.ClientSession,
    ) -> None:
        async def filtered(name: str) -> None:
            clock.now += 0.01
            query = f"/metrics?name[]=test_probe&name[]={name}"
            async with client.get(cached.url(query)) as response:
                assert "test_probe 1.0" in await response.text()

        names = [f"sqlsentinel_name_{i}" for i in range(http.MAX_CACHED_VARIANTS + 1)]
        for name in names:
            await filtered(name)
        await filtered(names[-1])
        encodings_before = collector.calls
        await filtered(names[0])

        assert encodings_before == len(names)
        assert collector.calls == len(names) + 1

    async def test_collection_is_paused_while_encoding_then_restored(
        self,
        collector: CountingCollector,
        cached: SentinelHTTPServer,
        clock: FakeClock,
        raw: aiohttp.ClientSession,
    ) -> None:
        await scrape(raw, cached)
        during = collector.gc_enabled
        after = gc.isenabled()
        gc.disable()
        try:
            clock.now += http.METRICS_MAX_STALE
            await scrape(raw, cached)
            stays_off = not gc.isenabled()
        finally:
            gc.enable()

        assert (during, after, stays_off) == (False, True, True)

    def test_window_longer_than_the_bound_is_refused(self, metrics: Metrics) -> None:
        with pytest.raises(ValueError, match="max_age <= max_stale"):
            http.ExpositionCache(metrics.registry, max_age=10.0, max_stale=5.0)


class TestHealthSharing:
    async def test_one_answer_per_pass_of_the_event_loop(
        self, server: SentinelHTTPServer
    ) -> None:
        built: list[int] = []

        def answer() -> tuple[int, dict[str, Any]]:
            built.append(len(built))
            return 200, {"answer": len(built)}

        handler = server._endpoint(answer)
        request = make_mocked_request("GET", "/health")
        same_pass = await asyncio.gather(handler(request), handler(request))
        await asyncio.sleep(0)
        later = await handler(request)

        assert [r.body for r in same_pass] == [b'{"answer": 1}'] * 2
        assert later.body == b'{"answer": 2}'
        assert later.headers["Content-Type"] == "application/json; charset=utf-8"

    async def test_change_between_probes_is_answered_at_once(
        self,
        monitor: HealthMonitor,
        server: SentinelHTTPServer,
        client: aiohttp.ClientSession,
    ) -> None:
        before, _ = await get_json(client, server.url("/health/ready"))
        monitor.set_shutting_down()
        after, body = await get_json(client, server.url("/health/ready"))

        assert (before, after) == (200, 503)
        assert body["reasons"] == ["shutting down"]


class TestServer:
    async def test_default_bind_answers_on_ipv4_and_ipv6_loopback(
        self, monitor: HealthMonitor, metrics: Metrics, client: aiohttp.ClientSession
    ) -> None:
        server = SentinelHTTPServer(monitor, metrics, host=None, port=0)
        await server.start()
        try:
            families = {address for address, _ in server.addresses}
            port = server.addresses[0][1]
            v4, _ = await get_json(client, f"http://127.0.0.1:{port}/health/live")
            v6 = None
            if "::" in families:
                v6, _ = await get_json(client, f"http://[::1]:{port}/health/live")
        finally:
            await server.stop()

        assert "0.0.0.0" in families
        assert v4 == 200
        if socket.has_ipv6 and _ipv6_loopback_works():
            assert v6 == 200

    async def test_machine_without_ipv6_falls_back_to_ipv4(
        self,
        monitor: HealthMonitor,
        metrics: Metrics,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Simulated: this machine has IPv6, so the IPv6 bind is made to fail."""
        real = http._listening_socket

        def no_ipv6(
            family: int, address: tuple[Any, ...], v6only: bool
        ) -> socket.socket:
            if family == socket.AF_INET6:
                raise OSError(errno.EAFNOSUPPORT, "Address family not supported")
            return real(family, address, v6only)

        monkeypatch.setattr(http, "_listening_socket", no_ipv6)
        server = SentinelHTTPServer(monitor, metrics, host=None, port=0)
        await server.start()
        addresses = server.addresses
        await server.stop()

        assert [address for address, _ in addresses] == ["0.0.0.0"]

    async def test_explicit_ipv6_wildcard_alone_also_takes_ipv4(
        self, monitor: HealthMonitor, metrics: Metrics, client: aiohttp.ClientSession
    ) -> None:
        if not _ipv6_loopback_works() or _sysctl("net/ipv6/bindv6only") == "1":
            pytest.skip("this machine has no IPv6 loopback or binds IPv6 only")
        server = SentinelHTTPServer(monitor, metrics, host="::", port=0)
        await server.start()
        try:
            port = server.addresses[0][1]
            v4, _ = await get_json(client, f"http://127.0.0.1:{port}/health/live")
            v6, _ = await get_json(client, f"http://[::1]:{port}/health/live")
        finally:
            await server.stop()

        assert (v4, v6) == (200, 200)

    async def test_environment_sets_host_and_port(
        self, monitor: HealthMonitor, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(http.HOST_ENV, "127.0.0.1")
        monkeypatch.setenv(http.PORT_ENV, "0")
        server = SentinelHTTPServer(monitor, metrics)
        await server.start()
        addresses = server.addresses
        await server.stop()

        assert [address for address, _ in addresses] == ["127.0.0.1"]

    def test_default_port_is_8080(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(http.PORT_ENV, raising=False)
        monkeypatch.delenv(http.HOST_ENV, raising=False)

        assert http.resolve_bind(None, None) == (("0.0.0.0", "::"), 8080)

    def test_bad_port_in_environment_is_named(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(http.PORT_ENV, "eighty")

        with pytest.raises(
            ValueError, match="SQLSENTINEL_HTTP_PORT must be a port number"
        ):
            http.resolve_bind(None, None)

    async def test_busy_port_is_reported_with_the_address(
        self, server: SentinelHTTPServer, monitor: HealthMonitor, metrics: Metrics
    ) -> None:
        port = server.addresses[0][1]
        second = SentinelHTTPServer(monitor, metrics, host="127.0.0.1", port=port)

        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1 port {port}"):
            await second.start()

    async def test_stop_releases_the_port(
        self, monitor: HealthMonitor, metrics: Metrics, client: aiohttp.ClientSession
    ) -> None:
        server = SentinelHTTPServer(monitor, metrics, host="127.0.0.1", port=0)
        await server.start()
        port = server.addresses[0][1]
        await server.stop()

        again = SentinelHTTPServer(monitor, metrics, host="127.0.0.1", port=port)
        await again.start()
        status, _ = await get_json(client, again.url("/health/live"))
        await again.stop()

        assert status == 200

    async def test_probe_requests_are_logged_at_debug_others_at_info(
        self,
        server: SentinelHTTPServer,
        client: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        with caplog.at_level(logging.DEBUG, logger="sqlsentinel.http.access"):
            await get_json(client, server.url("/health"))
            async with client.get(server.url("/nowhere")) as response:
                await response.read()

        levels = {r.context["path"]: r.levelname for r in caplog.records}  # type: ignore[attr-defined]
        assert levels == {"/health": "DEBUG", "/nowhere": "INFO"}


class TestHealthcheckCommand:
    async def test_healthy_and_degraded_exit_0(
        self,
        monitor: HealthMonitor,
        probes: dict[str, Any],
        server: SentinelHTTPServer,
    ) -> None:
        healthy = await asyncio.to_thread(healthcheck, server.url("/health"), 5.0)
        probes["crm"].error = "refused"
        await monitor.run_checks_now()
        degraded = await asyncio.to_thread(healthcheck, server.url("/health"), 5.0)

        assert healthy == (0, "healthy (HTTP 200)")
        failing = "database.alert_databases.crm: ConnectionError: refused"
        assert degraded == (0, f"degraded (HTTP 200): {failing}")

    async def test_not_ready_exits_1_with_reasons(
        self, monitor: HealthMonitor, server: SentinelHTTPServer
    ) -> None:
        monitor.set_shutting_down()

        result = await asyncio.to_thread(healthcheck, server.url("/health/ready"), 5.0)

        assert result == (1, "unhealthy (HTTP 503): shutting down")

    def test_nothing_listening_exits_1(self) -> None:
        code, message = healthcheck(f"http://127.0.0.1:{free_port()}/health", 5.0)

        assert code == 1
        assert "cannot connect" in message

    def test_silent_server_exits_1_within_the_timeout(self) -> None:
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(1)  # accepts connections in the kernel, never answers
            url = f"http://127.0.0.1:{silent.getsockname()[1]}/health"

            code, message = healthcheck(url, 0.2)

        assert code == 1
        assert "timed out" in message or "no answer within 0.2 s" in message

    async def test_proxy_variables_are_ignored(
        self, server: SentinelHTTPServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{free_port()}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)

        code, _ = await asyncio.to_thread(healthcheck, server.url("/health/live"), 5.0)

        assert code == 0

    def test_only_http_urls_are_accepted(self) -> None:
        code, message = healthcheck("file:///etc/passwd", 1.0)

        assert code == 1
        assert message.startswith("not an http(s) URL")


def _ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def _sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None

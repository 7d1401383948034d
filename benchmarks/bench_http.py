"""Latency of /health and /metrics under load from a second process, on loopback.

The daemon side runs here: the HTTP server, Metrics holding 1,000 alerts with
realistic series, a HealthMonitor with fast fake probes checking every second,
and a background task keeping the event loop busy with small work (standing in
for the scheduler) while measuring how late the loop wakes it up. A separate
client process sends a bounded number of requests per endpoint at a fixed
concurrency, after one warm-up request, and reports each request's latency
(bodies are read, not decompressed) and the largest X-Sentinel-Metrics-Age.

`/metrics cold` scrapes one at a time with the cache switched off: what a
Prometheus scraping less often than every 5 s waits. The two idle rows give the
daemon side's CPU use before and after the load: equal when nothing re-encodes.

    .venv/bin/python benchmarks/bench_http.py [--alerts 1000] [--requests 20000]
        [--concurrency 20] [--cold-requests 20] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

from sqlsentinel.health import HealthMonitor, SchedulerSnapshot
from sqlsentinel.http import SentinelHTTPServer
from sqlsentinel.metrics import Metrics
from sqlsentinel.notify.base import ChannelCheck

ENDPOINTS = ("/health", "/health/ready", "/metrics")
CLIENT_TIMEOUT = 600.0  # the whole client run; it stops by itself well before
IDLE_SECONDS = 2.0

# Runs in the second process: N requests at concurrency C, latencies in ms as JSON.
CLIENT = r"""
import asyncio, json, sys, time
import aiohttp

async def main(url, total, concurrency):
    latencies, statuses, sizes, ages = [], {}, set(), []
    todo = iter(range(total))
    timeout = aiohttp.ClientTimeout(total=30)
    # No decompression here: the client's own CPU time would count as latency.
    async with aiohttp.ClientSession(
        timeout=timeout, auto_decompress=False
    ) as session:
        async def worker():
            for _ in todo:
                began = time.perf_counter()
                async with session.get(url) as response:
                    body = await response.read()
                latencies.append((time.perf_counter() - began) * 1000)
                statuses[response.status] = statuses.get(response.status, 0) + 1
                sizes.add(len(body))
                if "X-Sentinel-Metrics-Age" in response.headers:
                    ages.append(float(response.headers["X-Sentinel-Metrics-Age"]))
        async with session.get(url) as response:  # warm-up, not counted
            await response.read()
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    print(json.dumps({"latencies_ms": latencies, "statuses": statuses,
                      "elapsed_s": elapsed, "body_bytes": max(sizes),
                      "max_age_s": max(ages, default=None)}))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def filled_metrics(alerts: int) -> Metrics:
    """Metrics as a daemon with `alerts` alerts has them after a day of running."""
    rng = random.Random(7)  # reproducible fake data, not security
    metrics = Metrics(version="bench", revision="bench")
    names = [f"team{i % 17}_orders_late_by_region_{i:04d}" for i in range(alerts)]
    channels = [f"channel-{i}" for i in range(10)]
    metrics.set_alerts(names)
    metrics.set_channels(channels)
    now = time.time()
    for name in names:
        for _ in range(5):
            outcome = rng.choices(["ok", "alert", "error"], [90, 8, 2])[0]
            state = outcome.upper()
            duration = rng.lognormvariate(0, 1.5)
            metrics.execution_finished(
                name, outcome, state, duration, now, outcome != "error"
            )
        if rng.random() < 0.05:
            metrics.execution_skipped(name)
    for channel in channels:
        for _ in range(20):
            metrics.notification_delivered(channel, rng.random() > 0.05, rng.random())
    metrics.set_owed({channels[0]: 3})
    metrics.set_scheduler_jobs(alerts)
    metrics.config_loaded()
    return metrics


def fast_monitor() -> HealthMonitor:
    """A monitor with fast fake probes for 10 databases and 10 channels."""

    async def database() -> None:
        await asyncio.sleep(0)

    async def channel() -> ChannelCheck:
        return ChannelCheck("healthy", "configured")

    monitor = HealthMonitor(version="bench", interval=1.0, check_timeout=1.0)
    monitor.set_probes(
        state_db=database,
        databases={f"db{i}": database for i in range(10)},
        channels={f"channel-{i}": channel for i in range(10)},
    )
    monitor.set_scheduler(
        lambda: SchedulerSnapshot(True, 1000, None, datetime.now(UTC))
    )
    monitor.set_config_loaded(True)
    return monitor


class BusyLoop:
    """Small work every millisecond; records how late each wake-up was."""

    def __init__(self) -> None:
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def take(self) -> list[float]:
        lags, self.lags_ms = self.lags_ms, []
        return lags

    async def _run(self) -> None:
        state: dict[int, int] = {}
        while True:
            planned = time.perf_counter() + 0.001
            await asyncio.sleep(0.001)
            self.lags_ms.append(max(time.perf_counter() - planned, 0.0) * 1000)
            for i in range(50):  # stands in for a scheduler tick's bookkeeping
                state[i] = state.get(i, 0) + 1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


async def load(url: str, requests: int, concurrency: int) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT,
        url,
        str(requests),
        str(concurrency),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), CLIENT_TIMEOUT)
    if process.returncode != 0:
        raise SystemExit(f"load client failed on {url} (exit {process.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result


def summary(path: str, run: dict[str, Any], lags: list[float]) -> dict[str, Any]:
    latencies = run["latencies_ms"]
    return {
        "endpoint": path,
        "requests": len(latencies),
        "statuses": run["statuses"],
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(max(latencies), 2),
        "req_per_s": round(len(latencies) / run["elapsed_s"], 1),
        "body_bytes": run["body_bytes"],
        "max_age_s": run["max_age_s"],
        "loop_lag_p99_ms": round(percentile(lags, 99), 2) if lags else None,
        "loop_lag_max_ms": round(max(lags), 2) if lags else None,
    }


async def idle(name: str, busy: BusyLoop, seconds: float) -> dict[str, Any]:
    """CPU time and loop lag of the daemon side while nobody sends a request."""
    began = time.process_time()
    await asyncio.sleep(seconds)
    cpu = (time.process_time() - began) / seconds
    lags = busy.take()
    return {
        "endpoint": name,
        "cpu_ms_per_s": round(cpu * 1000, 1),
        "loop_lag_p99_ms": round(percentile(lags, 99), 2),
        "loop_lag_max_ms": round(max(lags), 2),
    }


async def cold_metrics(
    monitor: HealthMonitor, metrics: Metrics, args: argparse.Namespace
) -> dict[str, Any]:
    """/metrics when every scrape needs a new encoding (scrapes over 5 s apart)."""
    server = SentinelHTTPServer(
        monitor,
        metrics,
        host="127.0.0.1",
        port=0,
        metrics_max_age=0.0,
        metrics_max_stale=0.0,
    )
    await server.start()
    try:
        return await load(server.url("/metrics"), args.cold_requests, 1)
    finally:
        await server.stop()


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    monitor, metrics = fast_monitor(), filled_metrics(args.alerts)
    server = SentinelHTTPServer(monitor, metrics, host="127.0.0.1", port=0)
    busy = BusyLoop()
    await monitor.start()
    await server.start()
    busy.start()
    results = []
    try:
        await asyncio.sleep(0.5)
        busy.take()
        results.append(await idle("(idle)", busy, IDLE_SECONDS))
        for path in ENDPOINTS:
            run = await load(server.url(path), args.requests, args.concurrency)
            results.append(summary(path, run, busy.take()))
        run = await cold_metrics(monitor, metrics, args)
        results.append(summary("/metrics cold", run, busy.take()))
        results.append(await idle("(idle after)", busy, IDLE_SECONDS))
    finally:
        await busy.stop()
        await server.stop()
        await monitor.stop()
    return results


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"{args.alerts} alerts, {args.requests} requests per endpoint at concurrency "
        f"{args.concurrency} after one warm-up request, /metrics cold: "
        f"{args.cold_requests} one at a time; client in a second process on loopback"
    )
    print(
        f"{'endpoint':<15}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'req/s':>9}"
        f"{'bytes':>10}{'max age s':>10}{'loop lag p99/max ms':>22}"
    )
    for r in results:
        lag = f"{r['loop_lag_p99_ms']}/{r['loop_lag_max_ms']}"
        if "cpu_ms_per_s" in r:
            cpu = f"CPU {r['cpu_ms_per_s']} ms/s"
            print(f"{r['endpoint']:<15}{cpu:>36}{'':>20}{lag:>22}")
            continue
        age = "" if r["max_age_s"] is None else r["max_age_s"]
        print(
            f"{r['endpoint']:<15}{r['p50_ms']:>9}{r['p99_ms']:>9}{r['max_ms']:>9}"
            f"{r['req_per_s']:>9}{r['body_bytes']:>10}{age:>10}{lag:>22}"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--cold-requests", type=int, default=20)
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of a table"
    )
    args = parser.parse_args()
    if not (
        1 <= args.requests <= 20_000
        and 1 <= args.concurrency <= 200
        and 1 <= args.cold_requests <= 200
    ):
        parser.error(
            "keep the load bounded: 1-20000 requests, concurrency 1-200, "
            "1-200 cold requests"
        )
    return args


if __name__ == "__main__":
    arguments = parse_args()
    found = asyncio.run(main(arguments))
    if arguments.json:
        print(json.dumps(found, indent=2))
    else:
        print_table(found, arguments)

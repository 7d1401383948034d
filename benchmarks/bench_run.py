"""Benchmark `sqlsentinel run` and the idle daemon: whole-process time and peak memory.

Prints figures; asserts nothing. Usage: python benchmarks/bench_run.py [--repeat N]
The reference point (the existing SQL Sentinel, measured side by side on the same
machine): median 1.82 s and 58 MB for `run` on 200 trivial SQLite alerts.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SENTINEL = [sys.executable, "-m", "sqlsentinel"]


def make_config(directory: Path, count: int, schedule: str = "0 3 * * *") -> Path:
    db = directory / "data.db"
    if not db.exists():
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE t (v INTEGER)")
            conn.execute("INSERT INTO t VALUES (1)")
        conn.close()
    lines = [
        f'database: {{url: "sqlite:///{db}"}}',
        "daemon: {max_concurrency: 4}",
        "alerts:",
    ]
    for i in range(count):
        lines += [
            f"  - name: alert_{i:04d}",
            f'    schedule: "{schedule}"',
            f"    query: \"SELECT CASE WHEN v > {i % 2} THEN 'ALERT' ELSE 'OK' END AS status, v AS actual_value, {i % 2} AS threshold FROM t\"",
        ]
    path = directory / f"alerts_{count}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_once(config: Path, state: str) -> tuple[float, float, int]:
    """Return (seconds, peak RSS in MB, exit code) of one `sqlsentinel run`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run(
        [*SENTINEL, "run", str(config), "--state-db", state, "--json"],
        capture_output=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode not in (0, 1):
        sys.exit(f"run failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return elapsed, max(peak, before) / 1024, proc.returncode


def bench_run(directory: Path, count: int, repeat: int) -> None:
    config = make_config(directory, count)
    times, peaks = [], []
    for i in range(repeat):
        state = f"sqlite:///{directory / f'state_{count}_{i}.db'}"
        # A fresh child each time: ru_maxrss of children is the max over all of them,
        # so measure the peak in a wrapper process of its own.
        seconds, _, _ = run_once(config, state)
        times.append(seconds)
        peaks.append(
            peak_of(config, f"sqlite:///{directory / f'state_{count}_{i}_m.db'}")
        )
    med = statistics.median(times)
    print(
        f"run, {count:5d} alerts: median {med:.3f} s (min {min(times):.3f}, max {max(times):.3f}, n={repeat}), "
        f"peak RSS median {statistics.median(peaks):.1f} MB, per alert {med / count * 1000:.2f} ms"
    )


def peak_of(config: Path, state: str) -> float:
    code = (
        "import resource,subprocess,sys;"
        f"subprocess.run({[*SENTINEL, 'run', str(config), '--state-db', state, '--json']!r},capture_output=True);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip()) / 1024


def bench_startup(repeat: int) -> None:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([*SENTINEL, "--version"], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    print(
        f"startup (`sqlsentinel --version`): median {statistics.median(times) * 1000:.0f} ms"
    )


def bench_idle_daemon(directory: Path, count: int, settle: float = 8.0) -> None:
    config = make_config(directory, count)
    env = {**os.environ, "SQLSENTINEL_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(
        [
            *SENTINEL,
            "daemon",
            str(config),
            "--state-db",
            f"sqlite:///{directory / 'daemon.db'}",
            "--http-port",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        time.sleep(settle)
        rss = _rss_mb(proc.pid)
        cpu = _cpu_seconds(proc.pid)
        time.sleep(5)
        cpu_idle = _cpu_seconds(proc.pid) - cpu
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    print(
        f"daemon idle, {count} alerts: RSS {rss:.1f} MB, CPU {cpu_idle / 5 * 100:.1f}% of one core while idle"
    )


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sqlsentinel-bench-") as tmp:
        directory = Path(tmp)
        bench_startup(args.repeat)
        for count in (200, 1000):
            bench_run(directory, count, args.repeat)
        bench_idle_daemon(directory, 1000)


if __name__ == "__main__":
    main()

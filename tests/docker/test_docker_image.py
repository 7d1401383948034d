"""The production image on a real engine: build, metadata, run, scrape, signals.

One container runs for the whole module (its start-up is what most checks look
at); the SIGTERM test stops it and therefore comes last. The container uses
host networking, as everything does on these machines, so its HTTP server
listens on a free port of 127.0.0.1 and reaches the test's webhook receiver
there. Figures (build time, sizes, time to healthy, stop time) are printed.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from dockerkit import LABELS, REPO, BuiltImage, free_port, run_to_completion
from receivers import HttpReceiver

pytestmark = pytest.mark.docker

MB = 1_000_000
WAIT_S = 60.0
GRACE_S = 20
USER = "10001:10001"
# Secret values handed to the container by environment and by secret file;
# neither may show in logs or image history.
ENV_SECRET = f"env-secret-{uuid.uuid4().hex}"
FILE_SECRET = f"file-secret-{uuid.uuid4().hex}"

ALERTS_YAML = """\
database:
  url: sqlite:////data/app.db
alerts:
  - name: stock_low
    interval: 2s
    query: >-
      SELECT 'ALERT' AS status, value AS actual_value, 10 AS threshold
      FROM numbers
    notify:
      - channel: webhook
        name: receiver
        url: "http://127.0.0.1:{port}/hook"
        headers:
          X-Api-Key: "${{SENTINEL_TEST_API_KEY}}"
          X-Receiver-Token: "${{RECEIVER_TOKEN}}"
"""


@dataclass
class Running:
    """The module's container and what its start-up measured."""

    container: Any
    port: int
    receiver: HttpReceiver
    ready_after_s: float = 0.0
    healthy_after_s: float = 0.0
    notes: dict[str, float] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def logs(self) -> str:
        return str(
            self.container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
        )


def _world_readable_dir(path: Path) -> Path:
    """The container user (uid 10001) must read what the test mounts."""
    path.mkdir(parents=True)
    path.chmod(0o755)
    return path


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)


def _prepare_mounts(root: Path, receiver_port: int) -> dict[str, dict[str, str]]:
    config = _world_readable_dir(root / "config")
    _write(config / "alerts.yaml", ALERTS_YAML.format(port=receiver_port))
    data = _world_readable_dir(root / "data")
    with sqlite3.connect(data / "app.db") as conn:
        conn.execute("CREATE TABLE numbers (name TEXT PRIMARY KEY, value INTEGER)")
        conn.execute("INSERT INTO numbers VALUES ('level', 5)")
    conn.close()
    (data / "app.db").chmod(0o644)
    secrets = _world_readable_dir(root / "secrets")
    _write(secrets / "receiver_token", FILE_SECRET + "\n")
    return {
        str(config): {"bind": "/etc/sqlsentinel", "mode": "ro"},
        str(data): {"bind": "/data", "mode": "ro"},
        str(secrets): {"bind": "/run/secrets", "mode": "ro"},
    }


def _wait_until_healthy(running: Running, started: float) -> None:
    """Poll readiness (client clock) and Docker's health status until both are good."""
    deadline = started + WAIT_S
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            now = time.monotonic()
            if not running.ready_after_s:
                try:
                    if client.get(running.url("/health/ready")).status_code == 200:
                        running.ready_after_s = now - started
                except httpx.TransportError:
                    pass
            running.container.reload()
            state = running.container.attrs["State"]
            if state["Status"] == "exited":
                pytest.fail(
                    f"container exited with {state['ExitCode']}:\n{running.logs()}"
                )
            if (
                state.get("Health", {}).get("Status") == "healthy"
                and running.ready_after_s
            ):
                running.healthy_after_s = now - started
                return
            time.sleep(0.05)  # polling an external process: no event to wait on
    health = running.container.attrs["State"].get("Health")
    pytest.fail(f"not healthy within {WAIT_S} s; health={health}\n{running.logs()}")


@pytest.fixture(scope="module")
def running(
    docker_client: Any,
    sentinel_image: BuiltImage,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Running]:
    receiver = HttpReceiver().start()
    mounts = _prepare_mounts(tmp_path_factory.mktemp("image-run"), receiver.port)
    volume = docker_client.volumes.create(labels=LABELS)
    mounts[volume.name] = {"bind": "/var/lib/sqlsentinel", "mode": "rw"}
    port = free_port()
    started = time.monotonic()
    container = docker_client.containers.run(
        sentinel_image.tag,
        command=["daemon", "--run-on-start"],
        detach=True,
        network_mode="host",
        environment={
            "SQLSENTINEL_HTTP_HOST": "127.0.0.1",
            "SQLSENTINEL_HTTP_PORT": str(port),
            "SQLSENTINEL_LOG_LEVEL": "debug",
            "SENTINEL_TEST_API_KEY": ENV_SECRET,
        },
        volumes=mounts,
        read_only=True,
        tmpfs={"/tmp": "size=16m"},  # noqa: S108 - a tmpfs inside the container
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        labels=LABELS,
    )
    run = Running(container, port, receiver)
    try:
        _wait_until_healthy(run, started)
        print(
            f"\n[docker] /health/ready answered 200 after {run.ready_after_s:.2f} s; "
            f"Docker reported healthy after {run.healthy_after_s:.2f} s"
        )
        yield run
    finally:
        container.remove(force=True, v=True)
        volume.remove(force=True)
        receiver.stop()


# ---------------------------------------------------------------------------
# The image itself


def test_image_size_and_layers(
    docker_client: Any, sentinel_image: BuiltImage, base_image: str
) -> None:
    image = docker_client.images.get(sentinel_image.tag)
    base = docker_client.images.get(base_image)
    size, base_size = image.attrs["Size"], base.attrs["Size"]
    heaviest = sorted(image.history(), key=lambda layer: layer["Size"], reverse=True)[
        :3
    ]
    print(
        f"\n[docker] image {size / MB:.1f} MB = base {base_size / MB:.1f} MB + "
        f"own layers {(size - base_size) / MB:.1f} MB; "
        f"build {sentinel_image.build_seconds:.1f} s"
    )
    for layer in heaviest:
        print(f"[docker]   {layer['Size'] / MB:7.1f} MB  {layer['CreatedBy'][:90]}")
    assert size < 500 * MB, "the issue's hard limit"
    assert size - base_size < 150 * MB, (
        "the project's own layers grew: check EXTRAS and the venv"
    )


def test_image_metadata(docker_client: Any, sentinel_image: BuiltImage) -> None:
    config = docker_client.images.get(sentinel_image.tag).attrs["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == sentinel_image.version
    assert labels["org.opencontainers.image.revision"] == sentinel_image.revision
    assert labels["org.opencontainers.image.created"] == sentinel_image.created
    assert (
        labels["org.opencontainers.image.source"]
        == "https://example.com/sqlsentinel.git"
    )
    assert config["User"] == USER
    assert config["Entrypoint"][:2] == ["/usr/bin/tini", "--"]
    assert config["Cmd"] == ["daemon"]
    assert config["StopSignal"] == "SIGTERM"
    assert "/var/lib/sqlsentinel" in config["Volumes"]
    assert config["Healthcheck"]["Test"][:3] == [
        "CMD",
        "/opt/venv/bin/sqlsentinel",
        "healthcheck",
    ]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["SQLSENTINEL_CONFIG"] == "/etc/sqlsentinel/alerts.yaml"
    assert env["SQLSENTINEL_STATE_DB"] == "sqlite:////var/lib/sqlsentinel/state.db"
    ours = {name for name in env if name.startswith("SQLSENTINEL")}
    assert all(name.startswith("SQLSENTINEL_") for name in ours)


def test_image_holds_only_the_runtime(
    docker_client: Any, sentinel_image: BuiltImage
) -> None:
    script = (
        "ls /opt/venv/bin; echo ---; "
        "ls /opt/venv/lib/python3.11/site-packages; echo ---; "
        "ls / /src 2>&1; echo ---; sqlsentinel --version"
    )
    code, out = run_to_completion(
        docker_client, sentinel_image.tag, entrypoint=["sh", "-c", script]
    )
    assert code == 0, out
    bin_dir, site, root, version = out.split("---\n")
    assert "pip" not in bin_dir.split()
    assert "sentinel-ops" not in bin_dir.split()
    packages = site.split()
    assert "sqlsentinel" in packages
    assert "psycopg" in packages and "pymysql" in packages
    assert not {"sqlsentinel_ops", "docker", "pytest", "pip", "setuptools"} & set(
        packages
    )
    assert "No such file" in root, "no build tree (/src) in the runtime image"
    assert version.strip() == f"sqlsentinel {sentinel_image.version}"


def test_validate_through_the_entrypoint(
    docker_client: Any, sentinel_image: BuiltImage, tmp_path: Path
) -> None:
    config = _world_readable_dir(tmp_path / "config")
    _write(config / "alerts.yaml", ALERTS_YAML.format(port=1))
    code, out = run_to_completion(
        docker_client,
        sentinel_image.tag,
        command=["validate", "/etc/sqlsentinel/alerts.yaml"],
        environment={"SENTINEL_TEST_API_KEY": "x", "RECEIVER_TOKEN": "y"},
        volumes={str(config): {"bind": "/etc/sqlsentinel", "mode": "ro"}},
    )
    assert code == 0, out
    assert "valid (1 alerts" in out


def test_unreadable_secret_file_stops_start_with_a_clear_error(
    docker_client: Any, sentinel_image: BuiltImage, tmp_path: Path
) -> None:
    secrets = _world_readable_dir(tmp_path / "secrets")
    secret = secrets / "db_password"
    secret.write_text("hunter2-not-to-be-printed", encoding="utf-8")
    secret.chmod(0o600)  # owned by root: the container user cannot read it
    code, out = run_to_completion(
        docker_client,
        sentinel_image.tag,
        command=["--version"],
        volumes={str(secrets): {"bind": "/run/secrets", "mode": "ro"}},
    )
    assert code == 1
    assert "secret file /run/secrets/db_password is not readable by uid 10001" in out
    assert "hunter2" not in out


# ---------------------------------------------------------------------------
# The running daemon


def _seconds_between(start: str, end: str) -> float:
    """Seconds between two Docker timestamps (nanosecond precision cut to micro)."""

    def parse(stamp: str) -> datetime:
        head, _, frac = stamp.rstrip("Z").partition(".")
        return datetime.fromisoformat(f"{head}.{(frac or '0')[:6]:0<6}+00:00")

    return (parse(end) - parse(start)).total_seconds()


def test_turns_healthy(running: Running) -> None:
    body = httpx.get(running.url("/health"), timeout=5).json()
    assert body["status"] == "healthy"
    running.container.reload()
    health = running.container.attrs["State"]["Health"]
    assert health["Status"] == "healthy"
    assert running.ready_after_s > 0
    probes = [_seconds_between(e["Start"], e["End"]) for e in health["Log"]]
    print(
        f"\n[docker] health probe (sqlsentinel healthcheck) took "
        f"{min(probes):.2f}-{max(probes):.2f} s over {len(probes)} probes"
    )


def test_alert_runs_and_notifies_the_receiver(running: Running) -> None:
    request = running.receiver.wait_for(1)[0]
    assert request.method == "POST"
    assert request.path == "/hook"
    assert "stock_low" in request.body.decode()
    # ${SENTINEL_TEST_API_KEY} came from the container's environment and
    # ${RECEIVER_TOKEN} from /run/secrets/receiver_token via the entrypoint.
    assert request.headers["x-api-key"] == ENV_SECRET
    assert request.headers["x-receiver-token"] == FILE_SECRET


def _sample(metrics: str, name: str, labels: str) -> float:
    selector = rf"\{{{re.escape(labels)}\}}" if labels else ""
    match = re.search(rf"^{name}{selector} (\S+)$", metrics, re.MULTILINE)
    assert match, f"no sample {name}{{{labels}}} in /metrics"
    return float(match.group(1))


def test_metrics_scrape(running: Running, sentinel_image: BuiltImage) -> None:
    running.receiver.wait_for(1)
    response = httpx.get(running.url("/metrics"), timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        _sample(
            text, "sqlsentinel_alerts_total", 'alert_name="stock_low",status="alert"'
        )
        >= 1
    )
    assert (
        _sample(
            text,
            "sqlsentinel_notifications_total",
            'channel="receiver",status="success"',
        )
        >= 1
    )
    assert _sample(text, "sqlsentinel_scheduler_jobs", "") == 1
    build = re.search(r"^sqlsentinel_build_info\{(.*)\} 1\.0$", text, re.MULTILINE)
    assert build and f'version="{sentinel_image.version}"' in build.group(1)
    assert re.search(r"^process_resident_memory_bytes \S+$", text, re.MULTILINE)


def test_compose_verify_script_reads_the_metrics(running: Running) -> None:
    running.receiver.wait_for(1)
    env = {**os.environ, "SENTINEL_URL": running.url(""), "VERIFY_TIMEOUT": "30"}
    script = str(REPO / "compose" / "test" / "verify.py")
    good = subprocess.run(
        [sys.executable, script],
        env={**env, "VERIFY_EXPECT": "stock_low=alert"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert good.returncode == 0, good.stderr
    bad = subprocess.run(
        [sys.executable, script],
        env={**env, "VERIFY_EXPECT": "stock_low=ok", "VERIFY_TIMEOUT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert "not seen: stock_low=ok" in bad.stderr


def test_runs_as_non_root(running: Running) -> None:
    top = running.container.top(ps_args="-o uid,pid,comm")
    uids = {row[0] for row in top["Processes"]}
    assert uids == {"10001"}, top
    code, out = running.container.exec_run(["id", "-u"])
    assert (code, out.decode().strip()) == (0, "10001")


def _process_states(container: Any) -> list[tuple[str, str]]:
    """(command, state) of every process in the container, from /proc."""
    _, out = container.exec_run(["sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null"])
    states = []
    for line in out.decode().splitlines():
        comm = line[line.index("(") + 1 : line.rindex(")")]
        states.append((comm, line[line.rindex(")") + 2]))
    return states


def test_pid1_is_tini_and_reaps_orphans(running: Running) -> None:
    _, cmdline = running.container.exec_run(["cat", "/proc/1/cmdline"])
    assert cmdline.split(b"\0")[0] == b"/usr/bin/tini"
    # The shell exits at once; its background child is re-parented to PID 1.
    running.container.exec_run(["sh", "-c", "sleep 0.3 & exit 0"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        sleepers = [
            state
            for comm, state in _process_states(running.container)
            if comm == "sleep"
        ]
        if not sleepers:
            return  # exited and reaped
        if sleepers != ["Z"]:
            time.sleep(0.1)  # still sleeping: wait for it to exit
            continue
        time.sleep(0.1)  # a zombie for a moment is normal; a lasting one is not
    pytest.fail(f"orphan not reaped by PID 1: {_process_states(running.container)}")


def test_no_secret_in_logs_or_image_history(
    running: Running, docker_client: Any, sentinel_image: BuiltImage
) -> None:
    running.receiver.wait_for(1)
    logs = running.logs()
    assert "stock_low" in logs, "the debug log should mention the alert"
    history = json.dumps(docker_client.api.history(sentinel_image.tag))
    image = json.dumps(docker_client.api.inspect_image(sentinel_image.tag))
    for secret in (ENV_SECRET, FILE_SECRET):
        assert secret not in logs
        assert secret not in history
        assert secret not in image


def test_sighup_reaches_the_daemon_through_tini(running: Running) -> None:
    def reloads() -> float:
        text = httpx.get(running.url("/metrics"), timeout=5).text
        return _sample(text, "sqlsentinel_config_reloads_total", 'result="success"')

    before = reloads()
    running.container.kill(signal="SIGHUP")
    deadline = time.monotonic() + 15
    while reloads() == before and time.monotonic() < deadline:
        time.sleep(0.1)  # the reload happens in the daemon's loop
    assert reloads() == before + 1


def test_sigterm_stops_cleanly_with_exit_0(running: Running) -> None:
    started = time.monotonic()
    running.container.stop(timeout=GRACE_S)  # SIGTERM, SIGKILL after the grace period
    elapsed = time.monotonic() - started
    state = running.container.wait(timeout=GRACE_S + 30)
    print(f"\n[docker] stopped by SIGTERM in {elapsed:.2f} s (grace {GRACE_S} s)")
    # SIGKILL at the end of the grace period would give 137.
    assert state["StatusCode"] == 0, running.logs()[-3000:]
    assert "daemon stopped" in running.logs()
    running.container.reload()
    assert running.container.attrs["State"]["OOMKilled"] is False

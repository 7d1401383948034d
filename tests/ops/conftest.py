"""Fixtures for sentinel-ops: a fake engine, a canned SQL Sentinel on loopback, and
the real Docker engine, base image and registries for the `docker` tests."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from ops_doubles import CannedSentinel, FakeEngine, health_document, metrics_text
from typer.testing import CliRunner

from sqlsentinel_ops import cli

REPO = Path(__file__).resolve().parents[2]
SHARED_CI = REPO.parent / "shared" / "ci"


@pytest.fixture
def sentinel_http() -> Iterator[CannedSentinel]:
    """A healthy canned SQL Sentinel; tests change its answers."""
    canned = CannedSentinel("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code, ctype, body = canned.routes.get(self.path, (404, "text/plain", "no"))
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            """Keep test output quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    canned.url = f"http://127.0.0.1:{server.server_address[1]}"
    canned.set_health(health_document())
    canned.set_metrics(metrics_text())
    ok = json.dumps({"status": "healthy"})
    canned.routes["/health/live"] = (200, "application/json", ok)
    canned.routes["/health/ready"] = (200, "application/json", ok)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield canned
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    """A fake engine that every command receives instead of the real one."""
    engine = FakeEngine()
    monkeypatch.setattr(cli, "_connect", lambda: engine)
    return engine


@dataclass
class Invoked:
    """A finished CLI run: exit code, streams, and the JSON document when asked."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def document(self) -> dict[str, Any]:
        return json.loads(self.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def invoke() -> Callable[..., Invoked]:
    """Run sentinel-ops in-process with CliRunner."""

    def run(
        *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> Invoked:
        result = CliRunner().invoke(cli.app, list(args), input=stdin, env=env)
        if result.exception is not None and not isinstance(
            result.exception, SystemExit
        ):
            raise result.exception
        return Invoked(result.exit_code, result.stdout, result.stderr)

    return run


# ---------------------------------------------------------------------------------
# The real engine, base image and registries (docker-marked tests only).


def _script(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run a shared CI script; its last output line."""
    done = subprocess.run(
        ["bash", str(SHARED_CI / name), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


BASE_ENV = "SQLSENTINEL_DOCKER_BASE_IMAGE"
SESSION_START = time.time()
# Final images of earlier build stages (unlabelled by the engine), removed at the end.
STAGE_IMAGES: list[str] = []


@pytest.fixture(scope="session")
def docker_client() -> Any:
    """A docker-py client on a running engine.

    Follows the project's convention (.ci/docker-setup.sh, tests/docker): the
    variable set but empty means the setup found no engine, and the tests skip
    saying so. Unset, the shared script starts an engine; its failure fails.
    """
    import docker

    if os.environ.get(BASE_ENV) == "":
        pytest.skip(f"{BASE_ENV} is empty: .ci/docker-setup.sh found no Docker engine")
    if os.environ.get(BASE_ENV) is None:
        _script("docker-engine.sh")
    return docker.from_env(version="auto")


@pytest.fixture(scope="session")
def base_image(docker_client: Any) -> str:
    """The stand-in for python:3.11-slim: from the setup, else the shared script."""
    return os.environ.get(BASE_ENV) or _script("python-base-image.sh")


@pytest.fixture(scope="session")
def run_label(docker_client: Any) -> Iterator[str]:
    """A label unique to this test session; everything carrying it is removed."""
    value = uuid.uuid4().hex[:12]
    yield f"org.sqlsentinel.ops.test-run={value}"
    selector = {"label": f"org.sqlsentinel.ops.test-run={value}"}
    for container in docker_client.containers.list(all=True, filters=selector):
        container.remove(force=True, v=True)
    for image in docker_client.images.list(filters=selector):
        docker_client.images.remove(image.id, force=True)
    for image_id in STAGE_IMAGES:
        _remove_stage_image(docker_client, image_id)


def _remove_stage_image(client: Any, image_id: str) -> None:
    """Remove a builder-stage image this session made, unless something uses it."""
    import docker

    try:
        created = client.api.inspect_image(image_id)["Created"]
        made = datetime.fromisoformat(created[:26].rstrip("Z") + "+00:00").timestamp()
        if made >= SESSION_START - 1:
            client.images.remove(image_id)  # no force: refused while in use
    except docker.errors.APIError:
        return


def stage_images(build_log: str) -> list[str]:
    """Ids the legacy builder printed just before each later stage's FROM step."""
    found, last_id = [], None
    for line in build_log.splitlines():
        if line.startswith(" ---> ") and " " not in line[6:].strip():
            last_id = line[6:].strip()
        elif re.match(r"Step \d+/\d+ : FROM ", line) and last_id:
            found.append(last_id)
    return found


@pytest.fixture(scope="session")
def built_image(docker_client: Any, base_image: str, run_label: str) -> dict[str, Any]:
    """The project's image, built once per session by `sentinel-ops build`."""
    repository = f"sentinel-ops-it-{uuid.uuid4().hex[:8]}"
    result = CliRunner().invoke(
        cli.app,
        [
            "build",
            str(REPO),
            "--repository",
            repository,
            "--base-image",
            base_image,
            "--network",
            "host",
            "--label",
            run_label,
            "--json",
        ],
    )
    STAGE_IMAGES.extend(stage_images(result.stderr))
    assert result.exit_code == 0, result.stderr[-3000:]
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Registry:
    """A registry on loopback, with the credentials it wants (if any)."""

    address: str
    user: str | None = None
    password: str | None = None


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _registry(port: int, user: str | None, password: str | None) -> Iterator[Registry]:
    env = None
    if user:
        env = {**os.environ, "REGISTRY_USER": user, "REGISTRY_PASSWORD": password or ""}
    # A registry left by an earlier run may have other credentials: replace it,
    # and wait (bounded) until it has let go of the port.
    _script("local-registry.sh", "--stop", str(port))
    for _ in range(100):
        if _port_free(port):
            break
        time.sleep(0.05)
    assert _port_free(port), (
        f"127.0.0.1:{port} is held by a process the script did not start"
    )
    address = _script("local-registry.sh", str(port), env=env)
    yield Registry(address, user, password)
    _script("local-registry.sh", "--stop", str(port))


@pytest.fixture(scope="session")
def open_registry(docker_client: Any) -> Iterator[Registry]:
    """A registry without authentication on 127.0.0.1:5000."""
    yield from _registry(5000, None, None)


@pytest.fixture(scope="session")
def auth_registry(docker_client: Any) -> Iterator[Registry]:
    """A registry with basic auth on 127.0.0.1:5001."""
    yield from _registry(5001, "ops-ci", f"pw-{uuid.uuid4().hex}")

"""The development setup of compose/docker-compose.dev.yaml, run for real.

Compose itself cannot start it here (no registry for the other images, and
containers use host networking), so the test builds the image with the
template's build arguments and starts a container with the template's own
entrypoint, environment and mounts, read from the file. Only the HTTP address
is changed to a free loopback port. The mounted source is a copy: the test
edits it to check that the daemon restarts.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from dockerkit import LABELS, REPO, RUN_ID, BuiltImage, build_image, free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MB = 1_000_000
WAIT_S = 60.0
DEV_FILE = REPO / "compose" / "docker-compose.dev.yaml"


def _service() -> dict[str, Any]:
    service: dict[str, Any] = yaml.safe_load(DEV_FILE.read_text(encoding="utf-8"))[
        "services"
    ]["sqlsentinel"]
    return service


@pytest.fixture(scope="module")
def dev_image(docker_client: Any, base_image: str, register_build: Any) -> BuiltImage:
    args = {k: str(v) for k, v in _service()["build"]["args"].items()}
    built = build_image(
        docker_client, base_image, f"sqlsentinel-test-dev:{RUN_ID}", args
    )
    register_build(built)
    size = docker_client.images.get(built.tag).attrs["Size"]
    print(
        f"\n[docker] dev image (EXTRAS={args['EXTRAS']}, DEV_PACKAGES="
        f"{args['DEV_PACKAGES']}) {size / MB:.1f} MB, "
        f"built in {built.build_seconds:.1f} s"
    )
    return built


def _copy_tree(source: Path, target: Path) -> None:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.fixture(scope="module")
def dev_container(
    docker_client: Any, dev_image: BuiltImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, int, Path]]:
    service = _service()
    root = tmp_path_factory.mktemp("dev-src")
    _copy_tree(REPO / "sqlsentinel", root / "sqlsentinel")
    _copy_tree(REPO / "examples", root / "examples")
    volume = docker_client.volumes.create(labels=LABELS)
    port = free_port()
    environment = {
        **service["environment"],
        "SQLSENTINEL_HTTP_HOST": "127.0.0.1",
        "SQLSENTINEL_HTTP_PORT": str(port),
    }
    mounts = {
        str(root / "sqlsentinel"): {"bind": "/src/sqlsentinel", "mode": "ro"},
        str(root / "examples"): {"bind": "/src/examples", "mode": "ro"},
        volume.name: {"bind": "/var/lib/sqlsentinel", "mode": "rw"},
    }
    assert len(mounts) == len(service["volumes"]), "the template's mounts changed"
    container = docker_client.containers.run(
        dev_image.tag,
        entrypoint=service["entrypoint"],
        working_dir=service["working_dir"],
        environment={k: str(v) for k, v in environment.items()},
        volumes=mounts,
        network_mode="host",
        labels=LABELS,
        detach=True,
    )
    try:
        yield container, port, root
    finally:
        container.remove(force=True, v=True)
        volume.remove(force=True)


def _uptime(client: httpx.Client, port: int) -> float | None:
    try:
        response = client.get(f"http://127.0.0.1:{port}/health/ready")
    except httpx.TransportError:
        return None
    return (
        float(response.json()["uptime_seconds"])
        if response.status_code == 200
        else None
    )


def _wait_for_uptime_below(container: Any, port: int, limit: float) -> float:
    """Poll until a ready daemon reports less uptime than `limit` (a fresh process)."""
    deadline = time.monotonic() + WAIT_S
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            uptime = _uptime(client, port)
            if uptime is not None and uptime < limit:
                return uptime
            time.sleep(0.1)  # polling a process in a container
    pytest.fail(
        f"daemon not (re)started within {WAIT_S} s:\n"
        f"{container.logs().decode()[-3000:]}"
    )


def test_source_change_restarts_the_daemon(
    dev_container: tuple[Any, int, Path],
) -> None:
    container, port, root = dev_container
    first = _wait_for_uptime_below(container, port, float("inf"))
    with httpx.Client(timeout=2.0) as client:
        while (_uptime(client, port) or 0) < first + 1.5:
            time.sleep(0.1)  # let uptime grow so a restart is visible as a drop
        before = _uptime(client, port) or 0
    touched = root / "sqlsentinel" / "values.py"
    touched.write_text(
        touched.read_text(encoding="utf-8") + "\n# touched by the test\n",
        encoding="utf-8",
    )
    after = _wait_for_uptime_below(container, port, before - 1.0)
    logs = container.logs().decode()
    assert re.search(r"\d+ changes? detected", logs), logs[-2000:]
    assert after < before
    # Text logs at debug level, as the template asks.
    assert "DEBUG" in logs.upper() and not logs.lstrip().startswith("{")


def test_dev_container_stops_on_sigterm(dev_container: tuple[Any, int, Path]) -> None:
    container, port, _ = dev_container
    _wait_for_uptime_below(container, port, float("inf"))
    started = time.monotonic()
    container.stop(timeout=15)
    code = container.wait(timeout=45)["StatusCode"]
    print(
        f"\n[docker] dev container stopped in {time.monotonic() - started:.2f} s, "
        f"exit {code}"
    )
    assert code == 0, container.logs().decode()[-2000:]

"""Helpers shared by the Docker tests: constants, labels and the image build."""

from __future__ import annotations

import re
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BASE_ENV = "SQLSENTINEL_DOCKER_BASE_IMAGE"
STAND_IN_BASE = "sqlsentinel-ci/python:3.11-slim"
TEST_LABEL = "sqlsentinel.test"
RUN_ID = uuid.uuid4().hex[:12]
LABELS = {TEST_LABEL: RUN_ID}
SESSION_START = time.time()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (containers share the host's ports)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class BuiltImage:
    """An image built from the repository, with what the build measured."""

    tag: str
    version: str
    revision: str
    created: str
    build_seconds: float
    log: str
    builder_id: str | None


def git_revision() -> str:
    """HEAD's commit id; "unknown" outside a repository or before the first commit."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def build_image(
    client: Any, base: str, tag: str, buildargs: dict[str, str] | None = None
) -> BuiltImage:
    """Build the Dockerfile with the classic builder (docker-py) and host networking."""
    from sqlsentinel import __version__

    args = {
        "BASE_IMAGE": base,
        "VERSION": __version__,
        "REVISION": git_revision(),
        "CREATED": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "SOURCE": "https://example.com/sqlsentinel.git",
        **(buildargs or {}),
    }
    lines: list[str] = []
    started = time.monotonic()
    for chunk in client.api.build(
        path=str(REPO),
        tag=tag,
        buildargs=args,
        labels=LABELS,
        network_mode="host",
        rm=True,
        forcerm=True,
        decode=True,
    ):
        if "error" in chunk:  # errors arrive inside the stream, with HTTP 200
            tail = "".join(lines[-40:])
            pytest.fail(f"docker build failed: {chunk['error']}\n{tail}")
        lines.append(str(chunk.get("stream", "")))
    elapsed = time.monotonic() - started
    log = "".join(lines)
    return BuiltImage(
        tag,
        args["VERSION"],
        args["REVISION"],
        args["CREATED"],
        elapsed,
        log,
        builder_stage_id(log),
    )


def builder_stage_id(log: str) -> str | None:
    """The builder stage's last image id, read from a classic-builder log.

    The classic builder keeps that stage as an untagged image which carries no
    build label; the cleanup removes it by id.
    """
    stage_start = log.find("AS runtime")
    ids = re.findall(r"^ ---> ([0-9a-f]{12})$", log[:stage_start], re.MULTILINE)
    return ids[-1] if stage_start > 0 and ids else None


def run_to_completion(client: Any, image: str, **kwargs: Any) -> tuple[int, str]:
    """Run a labelled one-off container; return its exit code and output, remove it.

    Removal includes the anonymous volume the image's VOLUME creates, which
    docker-py's ``remove=True`` would leave behind.
    """
    container = client.containers.run(
        image, detach=True, network_mode="host", labels=LABELS, **kwargs
    )
    try:
        code = int(container.wait(timeout=120)["StatusCode"])
        return code, container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
    finally:
        container.remove(force=True, v=True)

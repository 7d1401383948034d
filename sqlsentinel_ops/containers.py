"""Start a SQL Sentinel container on the example config, and always remove it."""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from sqlsentinel_ops.engine import (
    COMMAND_LABEL,
    DEFAULT_HTTP_PORT,
    Container,
    ContainerSpec,
    Engine,
)
from sqlsentinel_ops.errors import CheckFailed, UsageProblem

CONFIG_IN_CONTAINER = "/sentinel-ops/alerts.yaml"
# The example's alert database: SQL Sentinel opens alert databases read-only and
# never creates a missing file, so an (empty) SQLite file is copied in beside the config.
EXAMPLE_DB_IN_CONTAINER = "/sentinel-ops/example.db"


def example_database() -> bytes:
    """An empty SQLite database file, the example's alert database."""
    import sqlite3

    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE heartbeat (ok INTEGER)")
        return conn.serialize()
    finally:
        conn.close()


def example_config() -> bytes:
    """The bundled example configuration."""
    return (resources.files("sqlsentinel_ops") / "example" / "alerts.yaml").read_bytes()


def read_config(path: Path | None) -> bytes:
    """The configuration to run with: a file given by the user, or the example."""
    if path is None:
        return example_config()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageProblem(f"{path}: cannot be read ({exc.strerror})") from None


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Running:
    """A created container and how to reach it once started."""

    container: Container
    port: int | None
    started_at: float = field(default=0.0)
    base_url: str = ""

    def start(self) -> None:
        """Start the container and learn its URL; ``started_at`` is set just before."""
        self.started_at = time.perf_counter()
        self.container.start()
        port = self.port or self.container.host_port(DEFAULT_HTTP_PORT)
        if port is None:
            raise CheckFailed(
                f"{self.container.name} publishes no port {DEFAULT_HTTP_PORT}"
            )
        self.base_url = f"http://127.0.0.1:{port}"

    def alive(self) -> bool:
        """Whether the container still runs."""
        return self.container.status() in {"created", "running"}


@contextmanager
def sentinel_container(
    engine: Engine,
    image: str,
    *,
    purpose: str,
    network: str | None,
    config: bytes,
    labels: dict[str, str],
) -> Iterator[Running]:
    """Create a labelled container holding ``config``; removed on the way out."""
    env = {"SQLSENTINEL_CONFIG": CONFIG_IN_CONTAINER}
    port = None
    if network == "host":
        # No port mapping on the host network: give the daemon its own free port.
        port = free_port()
        env["SQLSENTINEL_HTTP_PORT"] = str(port)
        env["SQLSENTINEL_HTTP_HOST"] = "127.0.0.1"
    spec = ContainerSpec(
        image=image,
        name=f"sentinel-ops-{purpose}-{secrets.token_hex(4)}",
        env=env,
        labels={COMMAND_LABEL: purpose, **labels},
        network=network,
        publish=None if port else DEFAULT_HTTP_PORT,
    )
    container = engine.create(spec)
    try:
        container.put_file(CONFIG_IN_CONTAINER, config)
        container.put_file(EXAMPLE_DB_IN_CONTAINER, example_database())
        yield Running(container, port)
    finally:
        container.remove()

"""Doubles for sentinel-ops tests: canned SQL Sentinel answers and a fake engine."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from sqlsentinel_ops.engine import ContainerSpec, ImageInfo, Layer
from sqlsentinel_ops.errors import ImageNotFound

# ---------------------------------------------------------------------------------
# A canned SQL Sentinel: real HTTP on loopback, answers chosen by each test.


def health_document(status: str = "healthy", **changes: Any) -> dict[str, Any]:
    """A /health body shaped like the daemon's."""
    document: dict[str, Any] = {
        "status": status,
        "timestamp": "2026-01-01T00:00:00.000Z",
        "version": "0.1.0",
        "uptime_seconds": 12.5,
        "checks": {
            "database": {
                "status": "healthy",
                "alert_databases": {"default": {"status": "healthy", "message": "ok"}},
            },
            "scheduler": {"status": "healthy", "message": "running"},
            "notifications": {"status": "healthy", "channels": {}},
        },
    }
    document.update(changes)
    return document


def metrics_text(*, alerts: float = 1, omit: str = "") -> str:
    """A real exposition from prometheus_client with the families SQL Sentinel has."""
    registry = CollectorRegistry()
    makers: dict[str, Callable[[], None]] = {
        "sqlsentinel_alerts": lambda: (
            Counter("sqlsentinel_alerts", "runs", ["status"], registry=registry)
            .labels("ok")
            .inc(alerts)
        ),
        "sqlsentinel_alert_duration_seconds": lambda: Histogram(
            "sqlsentinel_alert_duration_seconds", "duration", registry=registry
        ).observe(0.01),
        "sqlsentinel_notifications": lambda: Counter(
            "sqlsentinel_notifications", "sends", registry=registry
        ).inc(0),
        "sqlsentinel_scheduler_jobs": lambda: Gauge(
            "sqlsentinel_scheduler_jobs", "jobs", registry=registry
        ).set(1),
        "sqlsentinel_uptime_seconds": lambda: Gauge(
            "sqlsentinel_uptime_seconds", "uptime", registry=registry
        ).set(12.5),
        "sqlsentinel_build_info": lambda: (
            Gauge("sqlsentinel_build_info", "build", ["version"], registry=registry)
            .labels("0.1.0")
            .set(1)
        ),
    }
    for name, make in makers.items():
        if name != omit:
            make()
    return generate_latest(registry).decode()


@dataclass
class CannedSentinel:
    """A loopback HTTP server whose answers tests set per path."""

    url: str
    routes: dict[str, tuple[int, str, str]] = field(default_factory=dict)

    def set_health(self, document: Any, code: int | None = None) -> None:
        """Serve ``document`` at /health (code 503 when unhealthy unless given)."""
        if code is None:
            unhealthy = (
                isinstance(document, dict) and document.get("status") == "unhealthy"
            )
            code = 503 if unhealthy else 200
        self.routes["/health"] = (code, "application/json", json.dumps(document))

    def set_metrics(self, text: str, code: int = 200) -> None:
        """Serve ``text`` at /metrics."""
        self.routes["/metrics"] = (code, "text/plain; version=0.0.4", text)


# ---------------------------------------------------------------------------------
# A fake engine, for error paths the real one does not produce on demand.


class FakeContainer:
    """A container that only records what was done to it."""

    def __init__(self, engine: FakeEngine, spec: ContainerSpec) -> None:
        self.engine, self.spec, self.name = engine, spec, spec.name
        self.files: dict[str, bytes] = {}
        self.state = "created"
        self.signals: list[str] = []
        self.removed = False

    def put_file(self, path: str, data: bytes) -> None:
        self.files[path] = data

    def start(self) -> None:
        self.state = self.engine.state_after_start
        if self.engine.interrupt_on_start:
            raise KeyboardInterrupt

    def host_port(self, port: int) -> int | None:
        return self.engine.http_port

    def status(self) -> str:
        return self.state

    def exec(self, command: list[str]) -> tuple[int, str]:
        return self.engine.exec_result

    def signal(self, name: str) -> None:
        self.signals.append(name)
        if self.engine.exit_code_on_sigterm is not None:
            self.state = "exited"

    def wait(self, timeout: float) -> int | None:
        return self.engine.exit_code_on_sigterm if self.state == "exited" else None

    def logs(self, tail: int) -> str:
        return "fake daemon: configuration error\n"

    def memory_bytes(self) -> int:
        return 40_000_000

    def remove(self) -> None:
        self.removed = True


@dataclass
class FakeEngine:
    """An :class:`Engine` whose answers each test sets."""

    endpoint: str = "fake://engine"
    images: dict[str, ImageInfo] = field(default_factory=dict)
    layers: list[Layer] = field(default_factory=list)
    build_chunks: list[dict[str, Any]] = field(default_factory=list)
    push_events: list[dict[str, Any]] = field(default_factory=list)
    http_port: int | None = None
    state_after_start: str = "running"
    interrupt_on_start: bool = False
    exec_result: tuple[int, str] = (0, "ok")
    exit_code_on_sigterm: int | None = 0
    containers: list[FakeContainer] = field(default_factory=list)
    tagged: list[str] = field(default_factory=list)
    pushed_auth: list[dict[str, str] | None] = field(default_factory=list)

    def add_image(self, ref: str, size: int = 150_000_000, **labels: str) -> ImageInfo:
        info = ImageInfo(
            f"sha256:{uuid.uuid4().hex}",
            (ref,),
            size,
            labels,
            ("CMD", "sqlsentinel", "healthcheck"),
        )
        self.images[ref] = self.images[info.id] = info
        return info

    def build(self, request: Any) -> Iterator[dict[str, Any]]:
        for chunk in self.build_chunks:
            if chunk.get("interrupt"):
                raise KeyboardInterrupt
            yield chunk

    def tag(self, image: str, repository: str, tag: str) -> None:
        self.tagged.append(f"{repository}:{tag}")

    def image(self, ref: str) -> ImageInfo:
        if ref not in self.images:
            raise ImageNotFound(f"The image {ref} does not exist in the engine.")
        return self.images[ref]

    def tags_of(self, repository: str) -> list[str]:
        refs = {ref for info in self.images.values() for ref in info.tags}
        return sorted(r for r in refs if r.rpartition(":")[0] == repository)

    def history(self, ref: str) -> list[Layer]:
        return self.layers

    def push(
        self, repository: str, tag: str, auth: dict[str, str] | None
    ) -> Iterator[dict[str, Any]]:
        self.pushed_auth.append(auth)
        yield from self.push_events

    def create(self, spec: ContainerSpec) -> FakeContainer:
        container = FakeContainer(self, spec)
        self.containers.append(container)
        return container

    def container_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.http_port}"

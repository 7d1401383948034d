"""The container engine as sentinel-ops sees it, and its docker-py implementation.

Commands talk to :class:`Engine` only, so unit tests can hand them a fake engine for
error paths a real engine does not produce on demand.
"""

from __future__ import annotations

import importlib
import io
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlsentinel_ops.errors import (
    CheckFailed,
    ContainerNotFound,
    EngineUnavailable,
    ImageNotFound,
)

# Every container sentinel-ops creates carries both labels. Images it builds carry
# neither: containers inherit image labels, so a user's own container of the image
# would otherwise match the leftover filter `--filter label=org.sqlsentinel.ops.command`.
OPS_LABEL = "org.sqlsentinel.ops"
COMMAND_LABEL = "org.sqlsentinel.ops.command"
RESERVED_LABELS = (OPS_LABEL, COMMAND_LABEL)
DEFAULT_HTTP_PORT = 8080


@dataclass(frozen=True)
class ImageInfo:
    """What sentinel-ops needs to know about a local image."""

    id: str
    tags: tuple[str, ...]
    size: int
    labels: dict[str, str]
    healthcheck: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Layer:
    """One entry of an image's history: the instruction and the bytes it added."""

    created_by: str
    size: int
    comment: str = ""


@dataclass(frozen=True)
class BuildRequest:
    """Everything the engine needs to build the image."""

    context: Path
    dockerfile: str
    tag: str
    buildargs: dict[str, str]
    labels: dict[str, str]
    nocache: bool = False
    network: str | None = None
    pull: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """How to start a SQL Sentinel container for a test or a benchmark."""

    image: str
    name: str
    env: dict[str, str]
    labels: dict[str, str]
    network: str | None = None
    # In bridge mode this container port is published on 127.0.0.1 (random port).
    publish: int | None = None


class Container(Protocol):
    """A container sentinel-ops started and must remove."""

    name: str

    def put_file(self, path: str, data: bytes) -> None:
        """Copy ``data`` to the absolute ``path`` inside the (created) container."""

    def start(self) -> None:
        """Start the container."""

    def host_port(self, port: int) -> int | None:
        """The loopback port that reaches ``port`` in the container, once started."""

    def status(self) -> str:
        """The engine's state of the container: created, running, exited..."""

    def exec(self, command: list[str]) -> tuple[int, str]:
        """Run a command inside the running container: exit code and output."""

    def signal(self, name: str) -> None:
        """Send a signal (``SIGTERM``) to the container's main process."""

    def wait(self, timeout: float) -> int | None:
        """Wait for the container to exit; its exit code, or None on timeout."""

    def logs(self, tail: int) -> str:
        """The last ``tail`` lines of the container's output."""

    def memory_bytes(self) -> int:
        """Memory in use, as `docker stats` counts it (page cache excluded)."""

    def remove(self) -> None:
        """Remove the container and its anonymous volumes, whatever its state."""


class Engine(Protocol):
    """The operations sentinel-ops performs on a container engine."""

    endpoint: str

    def build(self, request: BuildRequest) -> Iterator[dict[str, Any]]:
        """Build, yielding the engine's decoded progress chunks as they arrive."""

    def tag(self, image: str, repository: str, tag: str) -> None:
        """Give ``image`` the name ``repository:tag``."""

    def image(self, ref: str) -> ImageInfo:
        """Describe a local image; raises ImageNotFound."""

    def tags_of(self, repository: str) -> list[str]:
        """Every local ``repository:tag`` of one repository."""

    def history(self, ref: str) -> list[Layer]:
        """The image's layers, newest first."""

    def push(
        self, repository: str, tag: str, auth: dict[str, str] | None
    ) -> Iterator[dict[str, Any]]:
        """Push one tag, yielding the engine's decoded progress events."""

    def create(self, spec: ContainerSpec) -> Container:
        """Create (not start) a container."""

    def container_url(self, name: str) -> str:
        """The loopback URL of SQL Sentinel's HTTP server in a running container."""


def _docker() -> Any:
    """docker-py, imported on first use.

    Typed as Any: docker-py has no type hints, and the repository's own docker/
    folder would otherwise pass for it in mypy's eyes.
    """
    return importlib.import_module("docker")


def connect() -> Engine:
    """Connect to the engine named by DOCKER_HOST and the usual Docker environment."""
    docker = _docker()
    endpoint = _endpoint()
    try:
        client = docker.from_env(timeout=120)
    except docker.errors.DockerException as exc:
        raise EngineUnavailable(
            f"The Docker engine at {endpoint} does not answer ({_root_reason(exc)}); "
            "start it or point DOCKER_HOST at a running engine."
        ) from None
    return DockerEngine(client, endpoint)


def _endpoint() -> str:
    """The engine address docker-py will use, for messages."""
    docker = _docker()
    params = docker.utils.kwargs_from_env()
    if "base_url" not in params:
        params = docker.context.ContextAPI.kwargs_from_context()
    return str(params.get("base_url") or "unix:///var/run/docker.sock")


def _root_reason(exc: BaseException) -> str:
    """The innermost cause of a connection error, in a few words."""
    seen: BaseException = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    for arg in getattr(seen, "args", ()):
        if isinstance(arg, BaseException):
            seen = arg
    text = getattr(seen, "strerror", None) or str(seen)
    return text.strip().rstrip(".") or type(seen).__name__


class DockerEngine:
    """:class:`Engine` over docker-py's low-level API, with errors translated."""

    def __init__(self, client: Any, endpoint: str) -> None:
        self.client = client
        self.api = client.api
        self.endpoint = endpoint

    def build(self, request: BuildRequest) -> Iterator[dict[str, Any]]:
        """Stream the legacy builder's output (docker-py does not speak BuildKit)."""
        with self._errors():
            yield from self.api.build(
                path=str(request.context),
                dockerfile=request.dockerfile,
                tag=request.tag,
                buildargs=request.buildargs,
                labels=request.labels,
                nocache=request.nocache,
                network_mode=request.network,
                pull=request.pull,
                rm=True,
                forcerm=True,
                decode=True,
            )

    def tag(self, image: str, repository: str, tag: str) -> None:
        """Tag an image."""
        with self._errors(image=image):
            self.api.tag(image, repository, tag)

    def image(self, ref: str) -> ImageInfo:
        """Inspect a local image."""
        with self._errors(image=ref):
            attrs = self.api.inspect_image(ref)
        config = attrs.get("Config") or {}
        health = (config.get("Healthcheck") or {}).get("Test") or []
        return ImageInfo(
            id=attrs["Id"],
            tags=tuple(attrs.get("RepoTags") or ()),
            size=int(attrs.get("Size") or 0),
            labels=dict(config.get("Labels") or {}),
            healthcheck=tuple(health),
            env=dict(
                item.split("=", 1) for item in config.get("Env") or [] if "=" in item
            ),
        )

    def tags_of(self, repository: str) -> list[str]:
        """List the repository's tags with the engine's reference filter."""
        with self._errors():
            images = self.api.images(name=repository)
        refs = [ref for found in images for ref in found.get("RepoTags") or []]
        return sorted(ref for ref in refs if ref.rpartition(":")[0] == repository)

    def history(self, ref: str) -> list[Layer]:
        """Read the image history."""
        with self._errors(image=ref):
            entries = self.api.history(ref)
        return [
            Layer(
                e.get("CreatedBy") or "",
                int(e.get("Size") or 0),
                e.get("Comment") or "",
            )
            for e in entries
        ]

    def push(
        self, repository: str, tag: str, auth: dict[str, str] | None
    ) -> Iterator[dict[str, Any]]:
        """Stream push events; the caller must look for in-band errors."""
        with self._errors(image=f"{repository}:{tag}"):
            yield from self.api.push(
                repository, tag=tag, stream=True, decode=True, auth_config=auth
            )

    def create(self, spec: ContainerSpec) -> Container:
        """Create a labelled container."""
        ports = {spec.publish: ("127.0.0.1", None)} if spec.publish else None
        with self._errors(image=spec.image):
            container = self.client.containers.create(
                spec.image,
                name=spec.name,
                environment=spec.env,
                labels={OPS_LABEL: "1", **spec.labels},
                network_mode=spec.network,
                ports=ports,
                detach=True,
            )
        return DockerContainer(self, container)

    def container_url(self, name: str) -> str:
        """Find the loopback address of SQL Sentinel's HTTP port in a container."""
        docker = _docker()
        try:
            attrs = self.api.inspect_container(name)
        except docker.errors.NotFound:
            raise ContainerNotFound(f"No container named {name!r} exists.") from None
        state = attrs.get("State") or {}
        if not state.get("Running"):
            raise CheckFailed(
                f"Container {name} is not running ({state.get('Status')}, "
                f"exit code {state.get('ExitCode')})."
            )
        return _container_url(attrs)

    @contextmanager
    def _errors(self, image: str | None = None) -> Iterator[None]:
        """Turn docker-py and connection errors into one-sentence OpsErrors."""
        docker = _docker()
        requests = importlib.import_module("requests")
        try:
            yield
        except docker.errors.ImageNotFound:
            raise ImageNotFound(
                f"The image {image} does not exist in the engine."
            ) from None
        except docker.errors.APIError as exc:
            if exc.status_code == 404 and image and "image" in str(exc.explanation):
                raise ImageNotFound(f"The image {image} does not exist.") from None
            raise CheckFailed(f"The Docker engine refused: {exc.explanation}") from None
        except (
            requests.exceptions.ConnectionError,
            docker.errors.DockerException,
        ) as exc:
            raise EngineUnavailable(
                f"The Docker engine at {self.endpoint} stopped answering "
                f"({_root_reason(exc)})."
            ) from None


def _container_url(attrs: dict[str, Any]) -> str:
    """The URL of port 8080 (or SQLSENTINEL_HTTP_PORT) of an inspected container."""
    env = dict(
        item.split("=", 1) for item in attrs["Config"].get("Env") or [] if "=" in item
    )
    port = int(env.get("SQLSENTINEL_HTTP_PORT") or DEFAULT_HTTP_PORT)
    if attrs["HostConfig"].get("NetworkMode") == "host":
        return f"http://127.0.0.1:{port}"
    bindings = (attrs["NetworkSettings"].get("Ports") or {}).get(f"{port}/tcp") or []
    if not bindings:
        raise CheckFailed(
            f"Container {attrs['Name'].lstrip('/')} does not publish port {port}; "
            "pass its URL instead."
        )
    return f"http://127.0.0.1:{bindings[0]['HostPort']}"


class DockerContainer:
    """:class:`Container` over a docker-py container object."""

    def __init__(self, engine: DockerEngine, container: Any) -> None:
        self.engine = engine
        self.container = container
        self.name = container.name

    def put_file(self, path: str, data: bytes) -> None:
        """Copy a file in with a tar archive (works with remote engines too)."""
        with self.engine._errors():
            self.container.put_archive("/", _tar_one_file(path.lstrip("/"), data))

    def start(self) -> None:
        """Start the container."""
        with self.engine._errors():
            self.container.start()

    def host_port(self, port: int) -> int | None:
        """Read the published port after start."""
        with self.engine._errors():
            self.container.reload()
        bindings = (self.container.ports or {}).get(f"{port}/tcp") or []
        return int(bindings[0]["HostPort"]) if bindings else None

    def status(self) -> str:
        """Reload and return the container state."""
        with self.engine._errors():
            self.container.reload()
        return str(self.container.status)

    def exec(self, command: list[str]) -> tuple[int, str]:
        """Run a command in the container."""
        with self.engine._errors():
            code, output = self.container.exec_run(command)
        return int(code), output.decode("utf-8", "replace")

    def signal(self, name: str) -> None:
        """Send a signal to PID 1."""
        with self.engine._errors():
            self.container.kill(signal=name)

    def wait(self, timeout: float) -> int | None:
        """Wait for exit by polling, so a slow stop never hits an HTTP read timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.engine._errors():
                self.container.reload()
            if self.container.status in {"exited", "dead"}:
                return int(self.container.attrs["State"]["ExitCode"])
            time.sleep(0.05)
        return None

    def logs(self, tail: int) -> str:
        """The last lines of the container's output."""
        with self.engine._errors():
            data = self.container.logs(tail=tail)
        return str(data.decode("utf-8", "replace"))

    def memory_bytes(self) -> int:
        """One stats sample; usage minus page cache, like `docker stats`."""
        with self.engine._errors():
            stats = self.container.stats(stream=False, one_shot=True)
        memory = stats.get("memory_stats") or {}
        detail = memory.get("stats") or {}
        cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
        return max(int(memory.get("usage") or 0) - int(cache), 0)

    def remove(self) -> None:
        """Force-remove with volumes; a container already gone is fine."""
        docker = _docker()
        try:
            self.container.remove(force=True, v=True)
        except docker.errors.NotFound:
            return


def _tar_one_file(name: str, data: bytes) -> bytes:
    """A tar archive holding one world-readable file (and its parent directories)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        parts = Path(name).parts
        for depth in range(1, len(parts)):
            folder = tarfile.TarInfo("/".join(parts[:depth]))
            folder.type, folder.mode, folder.mtime = (
                tarfile.DIRTYPE,
                0o755,
                int(time.time()),
            )
            tar.addfile(folder)
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()

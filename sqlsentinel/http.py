"""The daemon's HTTP endpoints (/health, /health/live, /health/ready, /metrics).

The server runs on the daemon's own event loop (aiohttp AppRunner, one socket per
address). /metrics answers from an ExpositionCache: encodings made on demand in
a worker thread and reused for at most a few seconds (docs/api/metrics.md,
"Freshness"). The client side, `sqlsentinel healthcheck`, is sqlsentinel.probe.
aiohttp is imported only when a server is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import gc
import gzip
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlsentinel.masking import mask

if TYPE_CHECKING:
    from aiohttp import web
    from aiohttp.abc import AbstractAccessLogger
    from prometheus_client import CollectorRegistry

    from sqlsentinel.health import HealthMonitor
    from sqlsentinel.metrics import Metrics

log = logging.getLogger(__name__)
access_log = logging.getLogger("sqlsentinel.http.access")

HOST_ENV = "SQLSENTINEL_HTTP_HOST"
PORT_ENV = "SQLSENTINEL_HTTP_PORT"
DEFAULT_PORT = 8080
# Both families, so a probe of `localhost` works whether it resolves to 127.0.0.1
# or ::1; the IPv6 socket is skipped on machines without IPv6.
DEFAULT_HOSTS = ("0.0.0.0", "::")  # noqa: S104 - the daemon serves probes from outside its container
PROBE_PATHS = frozenset({"/health", "/health/live", "/health/ready", "/metrics"})
_NO_IPV6 = {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT}
# /metrics: an encoding younger than METRICS_MAX_AGE seconds is served as is; one
# younger than METRICS_MAX_STALE is served while a new one is made; never older.
METRICS_MAX_AGE = 1.0
METRICS_MAX_STALE = 5.0
METRICS_AGE_HEADER = "X-Sentinel-Metrics-Age"
MAX_CACHED_VARIANTS = 4
# A cached exposition is keyed by content type, name[] filter and gzip.
_Variant = tuple[str, tuple[str, ...], bool]


def resolve_bind(host: str | None, port: int | None) -> tuple[tuple[str, ...], int]:
    """Addresses and port to listen on: option, then environment, then defaults."""
    raw_host = host if host is not None else os.environ.get(HOST_ENV, "")
    hosts = tuple(h.strip().strip("[]") for h in raw_host.split(",") if h.strip())
    if port is None:
        raw_port = os.environ.get(PORT_ENV, "").strip()
        try:
            port = int(raw_port) if raw_port else DEFAULT_PORT
        except ValueError:
            raise ValueError(
                f"{PORT_ENV} must be a port number, got {raw_port!r}"
            ) from None
    if not 0 <= port <= 65535:
        raise ValueError(f"HTTP port must be between 0 and 65535, got {port}")
    return (hosts if hosts and hosts != ("*",) else DEFAULT_HOSTS), port


def _listening_socket(
    family: int, address: tuple[Any, ...], v6only: bool
) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # With an IPv4 socket beside it, `::` must not claim IPv4 too; alone,
            # the system default applies (dual-stack on Linux).
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_sockets(hosts: tuple[str, ...], port: int) -> list[socket.socket]:
    """Bind one socket per address of `hosts`, all on the same port (even port 0)."""
    optional_v6 = hosts == DEFAULT_HOSTS
    addresses = list(_addresses(hosts, port))
    v6only = any(family == socket.AF_INET for family, _ in addresses)
    sockets: list[socket.socket] = []
    try:
        for family, address in addresses:
            bound_port = sockets[0].getsockname()[1] if sockets else port
            where = (address[0], bound_port, *address[2:])
            try:
                sockets.append(_listening_socket(family, where, v6only))
            except OSError as exc:
                if optional_v6 and family == socket.AF_INET6 and exc.errno in _NO_IPV6:
                    log.info("IPv6 unavailable, HTTP server listens on IPv4 only")
                    continue
                raise OSError(
                    exc.errno,
                    f"cannot listen on {address[0]} port {bound_port}: {exc.strerror}",
                ) from exc
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _addresses(
    hosts: tuple[str, ...], port: int
) -> Iterator[tuple[int, tuple[Any, ...]]]:
    seen: set[tuple[int, str]] = set()
    for host in hosts:
        if host == "::" and not socket.has_ipv6:
            continue
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, _, _, _, address in infos:
            if (family, str(address[0])) not in seen:
                seen.add((family, str(address[0])))
                yield family, address


@functools.cache
def _access_logger_class() -> type[AbstractAccessLogger]:
    from aiohttp.abc import AbstractAccessLogger

    class AccessLogger(AbstractAccessLogger):
        """Probes and scrapes at DEBUG (they come every few seconds), others at INFO."""

        def log(
            self, request: web.BaseRequest, response: web.StreamResponse, time: float
        ) -> None:
            level = logging.DEBUG if request.path in PROBE_PATHS else logging.INFO
            if self.logger.isEnabledFor(level):
                context = {
                    "method": request.method,
                    "path": request.path,
                    "http_status": response.status,
                    "duration_ms": round(time * 1000, 3),
                }
                self.logger.log(level, "http request", extra={"context": context})

        @property
        def enabled(self) -> bool:
            return self.logger.isEnabledFor(logging.INFO)

    return AccessLogger


class Exposition(NamedTuple):
    """One encoding of the registry: its bytes and when collecting began."""

    body: bytes
    taken: float  # the cache's clock just before the registry was collected


class ExpositionCache:
    """The latest encodings of a registry, made on demand in one worker thread.

    A request less than `max_age` seconds after an encoding began gets it as is.
    Up to `max_stale` seconds, it gets it at once while a new encoding starts for
    the requests after it; later (or when there is none), it waits for a new one.
    So values served are never more than `max_stale` seconds old. Requests for
    the same variant share one encoding, and nothing is encoded while nobody asks.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        max_age: float = METRICS_MAX_AGE,
        max_stale: float = METRICS_MAX_STALE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= max_age <= max_stale:
            raise ValueError(
                f"need 0 <= max_age <= max_stale, got {max_age:g} and {max_stale:g}"
            )
        self.registry = registry
        self.max_age = max_age
        self.max_stale = max_stale
        self._clock = clock
        self._latest: dict[_Variant, Exposition] = {}
        self._pending: dict[_Variant, asyncio.Future[Exposition]] = {}
        self._executor: ThreadPoolExecutor | None = None

    async def get(
        self, variant: _Variant, encoder: Callable[[Any], bytes]
    ) -> tuple[Exposition, float]:
        """The exposition to serve for `variant` and its age in seconds."""
        latest = self._latest.get(variant)
        age = math.inf if latest is None else self._clock() - latest.taken
        if latest is not None and age < self.max_age:
            return latest, age
        refresh = self._refresh(variant, encoder)
        if latest is not None and age < self.max_stale:
            return latest, age
        fresh = await asyncio.shield(refresh)
        return fresh, max(self._clock() - fresh.taken, 0.0)

    async def wait_idle(self) -> None:
        """Wait until no encoding is in progress (for tests)."""
        while self._pending:
            await asyncio.wait(list(self._pending.values()))

    def close(self) -> None:
        """Drop the cached bodies and stop the worker thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._latest.clear()

    def _refresh(
        self, variant: _Variant, encoder: Callable[[Any], bytes]
    ) -> asyncio.Future[Exposition]:
        pending = self._pending.get(variant)
        if pending is None:
            _, names, compress = variant
            registry = self.registry
            target = registry.restricted_registry(names) if names else registry
            pending = asyncio.get_running_loop().run_in_executor(
                self._worker(), self._encode, encoder, target, compress
            )
            self._pending[variant] = pending
            pending.add_done_callback(functools.partial(self._settle, variant))
        return pending

    def _worker(self) -> ThreadPoolExecutor:
        # Encoding is CPU work: off the event loop, one encoding at a time.
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                1, thread_name_prefix="sqlsentinel-metrics"
            )
        return self._executor

    def _encode(
        self, encoder: Callable[[Any], bytes], target: Any, compress: bool
    ) -> Exposition:
        taken = self._clock()
        with _collection_paused():
            body = encoder(target)
        if compress:
            # Level 6: nearly the size of level 9 at a third of its CPU time.
            body = gzip.compress(body, compresslevel=6, mtime=0)
        return Exposition(body, taken)

    def _settle(self, variant: _Variant, done: asyncio.Future[Exposition]) -> None:
        if self._pending.get(variant) is done:
            del self._pending[variant]
        if done.cancelled():
            return
        error = done.exception()  # also marks it retrieved when nobody awaited it
        if error is not None:
            log.error(
                "metrics encoding failed",
                extra={"context": {"error": mask(f"{type(error).__name__}: {error}")}},
            )
            return
        self._store(variant, done.result())

    def _store(self, variant: _Variant, exposition: Exposition) -> None:
        self._latest[variant] = exposition
        # Bodies too old to be served again are dropped, and the number of
        # variants is bounded: Accept and name[] are chosen by the client.
        now = self._clock()
        for key, each in list(self._latest.items()):
            if now - each.taken >= self.max_stale:
                del self._latest[key]
        while len(self._latest) > MAX_CACHED_VARIANTS:
            oldest = min(self._latest, key=lambda k: self._latest[k].taken)
            del self._latest[oldest]


@contextlib.contextmanager
def _collection_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (process-wide) for a short CPU task.

    An encoding holds ~100k short-lived objects (1,000 alerts), enough to start
    a full collection each time: ~40 ms holding the GIL, a stall of the event
    loop. Paused, they are freed by reference counting (they hold no cycles).
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


class SentinelHTTPServer:
    """aiohttp server for health and metrics, started and stopped with the daemon."""

    def __init__(
        self,
        monitor: HealthMonitor,
        metrics: Metrics,
        host: str | None = None,
        port: int | None = None,
        *,
        shutdown_timeout: float = 3.0,
        metrics_max_age: float = METRICS_MAX_AGE,
        metrics_max_stale: float = METRICS_MAX_STALE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.monitor = monitor
        self.metrics = metrics
        self.hosts, self.port = resolve_bind(host, port)
        self.shutdown_timeout = shutdown_timeout
        self.expositions = ExpositionCache(
            metrics.registry,
            max_age=metrics_max_age,
            max_stale=metrics_max_stale,
            clock=clock,
        )
        self._runner: web.AppRunner | None = None
        self._sockets: list[socket.socket] = []

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (address, port) pairs listened on, e.g. to learn port 0's choice."""
        return [
            (str(s.getsockname()[0]), int(s.getsockname()[1])) for s in self._sockets
        ]

    def url(self, path: str = "/") -> str:
        """A loopback URL of this server, for tests and the healthcheck default."""
        address, port = self.addresses[0]
        if address in ("0.0.0.0", "::"):  # noqa: S104 - matching, not binding
            address = "127.0.0.1" if address == "0.0.0.0" else "::1"  # noqa: S104
        shown = f"[{address}]" if ":" in address else address
        return f"http://{shown}:{port}{path}"

    async def start(self) -> None:
        """Listen on every configured address; raise OSError naming a busy one."""
        from aiohttp import web

        runner = web.AppRunner(
            self._app(),
            handle_signals=False,
            shutdown_timeout=self.shutdown_timeout,
            access_log_class=_access_logger_class(),
            access_log=access_log,
        )
        await runner.setup()
        self._runner = runner
        try:
            self._sockets = bind_sockets(self.hosts, self.port)
            for sock in self._sockets:
                await web.SockSite(runner, sock).start()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "http server listening", extra={"context": {"addresses": self.addresses}}
        )

    async def stop(self) -> None:
        """Stop listening, let running requests finish briefly, release the sockets."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for sock in self._sockets:
            sock.close()
        self.expositions.close()

    def _app(self) -> web.Application:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/health", self._endpoint(self.monitor.health))
        app.router.add_get("/health/live", self._endpoint(self.monitor.live))
        app.router.add_get("/health/ready", self._endpoint(self.monitor.ready))
        app.router.add_get("/metrics", self._serve_metrics)
        return app

    def _endpoint(
        self, answer: Callable[[], tuple[int, dict[str, Any]]]
    ) -> Callable[[web.Request], Any]:
        from aiohttp import web

        # Requests handled in the same pass of the event loop share one answer,
        # so it is at most one pass old; under a burst of probes, building the
        # JSON is most of the cost of a request.
        shared: list[tuple[int, bytes]] = []

        async def handler(request: web.Request) -> web.Response:
            if not shared:
                status, body = answer()
                shared.append((status, json.dumps(body, ensure_ascii=False).encode()))
                asyncio.get_running_loop().call_soon(shared.clear)
            status, raw = shared[0]
            return web.Response(
                status=status,
                body=raw,
                content_type="application/json",
                charset="utf-8",
                headers={"Cache-Control": "no-store"},
            )

        return handler

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        from aiohttp import hdrs, web
        from prometheus_client.exposition import choose_encoder

        accept = ",".join(request.headers.getall(hdrs.ACCEPT, []))
        encoder, content_type = choose_encoder(accept)
        names = tuple(sorted(set(request.query.getall("name[]", []))))
        compress = accepts_gzip(request.headers.get(hdrs.ACCEPT_ENCODING, ""))
        exposition, age = await self.expositions.get(
            (content_type, names, compress), encoder
        )
        headers = {
            "Content-Type": content_type,
            "Cache-Control": "no-store",
            "Vary": "Accept, Accept-Encoding",
            METRICS_AGE_HEADER: f"{age:.3f}",
        }
        if compress:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=exposition.body, headers=headers)


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header allows gzip (and does not set q=0)."""
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00")
    return False

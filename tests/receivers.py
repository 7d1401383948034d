"""Real SMTP and HTTP receivers on loopback, for notification tests.

Both receivers run in their own thread with their own event loop, so they serve
async tests, sync tests and a daemon started as a subprocess alike. They bind
127.0.0.1 on an ephemeral port and record everything they receive.

SMTP (aiosmtpd)::

    rx = smtp_factory(security="starttls", auth=("user", "pw"))   # fixture
    rx.host, rx.port            # where to point SmtpConfig
    rx.messages                 # list[ReceivedMail]: mail_from, rcpt_tos, message
                                #   (EmailMessage), raw, tls, login
    rx.reject["bad@x.org"] = "550 5.1.1 no such user"   # RCPT reply for one address
    rx.wait_for(1)              # block until 1 message arrived, return the list

    security: "none" (plain), "starttls" (STARTTLS required before MAIL) or
    "tls" (implicit TLS). auth=(user, password) offers AUTH and checks it (required
    before MAIL under starttls); rx.auth_failures counts refused logins.
    ``smtp_receiver`` is a ready plain server without auth.

HTTP (aiohttp)::

    rx = http_receiver                      # fixture
    rx.url("/hook")                         # "http://127.0.0.1:PORT/hook"
    rx.reply = Reply.rate_limited("7")      # answer for every request from now on
    rx.enqueue(Reply.server_error(), Reply.ok())  # one-off answers, used first
    rx.requests                             # list[ReceivedRequest]: method, path,
                                            #   headers (lower-case keys), body, json()
    rx.wait_for(2)                          # block until 2 requests arrived

    Reply.ok(), Reply.rate_limited(retry_after), Reply.server_error(),
    Reply.bad_request(), Reply.hang() (accept, never answer until stop), or any
    Reply(status, body, headers).

TLS: the session fixture ``tls_files`` holds a self-signed certificate for
localhost/127.0.0.1 (made with the ``cryptography`` package if installed, else the
``openssl`` command); point SSL_CERT_FILE at ``tls_files.cert`` to make clients
trust it.

``sample_notification(**changes)`` builds a firing Notification holding raw driver
values (Decimal, datetime, UUID, bytes, a big int) and HTML-looking text.

tests/conftest.py loads these fixtures with ``pytest_plugins = ["receivers"]``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import email
import email.policy
import json
import shutil
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from sqlsentinel.notify.base import Notification

LOOPBACK = "127.0.0.1"
WAIT_SECONDS = 10.0

# ---------------------------------------------------------------------------
# TLS material


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed certificate and its key, valid for localhost and 127.0.0.1."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def make_tls_files(directory: Path) -> TlsFiles:
    """Write a fresh self-signed certificate and key into ``directory``."""
    files = TlsFiles(directory / "cert.pem", directory / "key.pem")
    try:
        import cryptography  # noqa: F401
    except ImportError:
        _openssl_cert(files)
    else:
        _cryptography_cert(files)
    return files


def _openssl_cert(files: TlsFiles) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("neither the cryptography package nor the openssl command is here")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
            "-keyout",
            str(files.key),
            "-out",
            str(files.cert),
        ],
        check=True,
        capture_output=True,
    )


def _cryptography_cert(files: TlsFiles) -> None:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    alt_names = x509.SubjectAlternativeName(
        [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(alt_names, critical=False)
        .sign(key, hashes.SHA256())
    )
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A self-signed certificate for localhost, shared by the session."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


# ---------------------------------------------------------------------------
# SMTP


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the SMTP server accepted it."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    tls: bool
    login: str | None


class _Recorder:
    """Thread-safe list of received items with a blocking wait."""

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._cond = threading.Condition()

    def add(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def snapshot(self) -> list[Any]:
        with self._cond:
            return list(self._items)

    def wait_for(self, count: int, timeout: float) -> list[Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._items) >= count, timeout):
                raise AssertionError(
                    f"expected {count} item(s), got {len(self._items)}"
                )
            return list(self._items)


class _SmtpHandler:
    def __init__(self, receiver: SmtpReceiver) -> None:
        self.receiver = receiver

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        reply = self.receiver.reject.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.content)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        auth_data = session.auth_data if session.authenticated else None
        login = auth_data.login.decode() if auth_data is not None else None
        self.receiver._mail.add(
            ReceivedMail(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                message=parsed,  # type: ignore[arg-type]
                raw=raw,
                tls=session.ssl is not None or self.receiver.security == "tls",
                login=login,
            )
        )
        return "250 Message accepted"


class _EphemeralController(Controller):  # type: ignore[misc]
    """An aiosmtpd controller that binds port 0 and learns the port it got."""

    def _create_server(self) -> Any:
        async def bind() -> asyncio.AbstractServer:
            server = await self.loop.create_server(
                self._factory_invoker,
                host=self.hostname,
                port=0,
                ssl=self.ssl_context,
            )
            self.port = server.sockets[0].getsockname()[1]
            return server

        return bind()


class SmtpReceiver:
    """An aiosmtpd server on 127.0.0.1 that records the messages it accepts."""

    def __init__(
        self,
        security: Literal["none", "starttls", "tls"] = "none",
        auth: tuple[str, str] | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        if security != "none" and tls is None:
            raise ValueError("TLS modes need tls_files")
        self.security = security
        self.auth = auth
        self.reject: dict[str, str] = {}
        self.auth_failures = 0
        self._mail = _Recorder()
        context = tls.server_context() if tls else None
        smtp_kwargs: dict[str, Any] = {}
        if security == "starttls":
            smtp_kwargs.update(tls_context=context, require_starttls=True)
        if auth is not None:
            # Implicit TLS is already encrypted; aiosmtpd only knows about STARTTLS.
            smtp_kwargs.update(
                authenticator=self._authenticate,
                auth_required=security == "starttls",
                auth_require_tls=security == "starttls",
            )
        self._controller = _EphemeralController(
            _SmtpHandler(self),
            hostname=LOOPBACK,
            server_hostname="localhost",
            ssl_context=context if security == "tls" else None,
            **smtp_kwargs,
        )

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.auth is not None
        ok = (
            isinstance(data, LoginPassword)
            and (
                data.login.decode(),
                data.password.decode(),
            )
            == self.auth
        )
        if not ok:
            self.auth_failures += 1
        # handled=False: aiosmtpd itself answers 535 to a failed login.
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def messages(self) -> list[ReceivedMail]:
        return self._mail.snapshot()

    def wait_for(self, count: int, timeout: float = WAIT_SECONDS) -> list[ReceivedMail]:
        return self._mail.wait_for(count, timeout)

    def start(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


@pytest.fixture
def smtp_factory(tls_files: TlsFiles) -> Iterator[Any]:
    """Start SMTP receivers on demand: ``smtp_factory(security=..., auth=...)``."""
    started: list[SmtpReceiver] = []

    def start(
        security: Literal["none", "starttls", "tls"] = "none",
        auth: tuple[str, str] | None = None,
    ) -> SmtpReceiver:
        receiver = SmtpReceiver(security, auth, tls_files).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


@pytest.fixture
def smtp_receiver(smtp_factory: Any) -> SmtpReceiver:
    """A plain SMTP receiver without authentication."""
    return smtp_factory()  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------
# HTTP


@dataclass(frozen=True)
class Reply:
    """What the HTTP receiver answers to one request."""

    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    hangs: bool = False

    @classmethod
    def ok(cls) -> Reply:
        return cls()

    @classmethod
    def rate_limited(cls, retry_after: str = "5") -> Reply:
        return cls(429, "rate_limited", {"Retry-After": retry_after})

    @classmethod
    def server_error(cls) -> Reply:
        return cls(500, "internal error")

    @classmethod
    def bad_request(cls, body: str = "invalid_payload") -> Reply:
        return cls(400, body)

    @classmethod
    def hang(cls) -> Reply:
        return cls(hangs=True)


@dataclass(frozen=True)
class ReceivedRequest:
    """One HTTP request as the receiver saw it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpReceiver:
    """An aiohttp server on 127.0.0.1 that records requests and answers as told."""

    def __init__(self) -> None:
        self.reply = Reply.ok()
        self._queue: list[Reply] = []
        self._requests = _Recorder()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None
        self._release: asyncio.Event | None = None
        self.port = 0

    def url(self, path: str = "/") -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def enqueue(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, then with ``reply`` again."""
        self._queue.extend(replies)

    @property
    def requests(self) -> list[ReceivedRequest]:
        return self._requests.snapshot()

    def wait_for(
        self, count: int, timeout: float = WAIT_SECONDS
    ) -> list[ReceivedRequest]:
        return self._requests.wait_for(count, timeout)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self._requests.add(
            ReceivedRequest(
                method=request.method,
                path=request.path,
                query=request.query_string,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
            )
        )
        reply = self._queue.pop(0) if self._queue else self.reply
        if reply.hangs:
            assert self._release is not None
            await self._release.wait()
        return web.Response(status=reply.status, text=reply.body, headers=reply.headers)

    async def _start(self) -> None:
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        # A connection accepted in this very tick must finish its setup first:
        # closing the server before that leaks its socket (CPython 3.11 asyncio).
        await asyncio.sleep(0)
        assert self._release is not None
        assert self._runner is not None
        self._release.set()
        await self._runner.cleanup()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        # Like asyncio.run: cancel what is left (e.g. a connection still being
        # accepted) and let it close its socket before the loop goes away.
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    def start(self) -> HttpReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(WAIT_SECONDS)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(WAIT_SECONDS)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(WAIT_SECONDS)


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    """An HTTP receiver answering 200 until told otherwise."""
    receiver = HttpReceiver().start()
    yield receiver
    receiver.stop()


# ---------------------------------------------------------------------------
# A notification to send


def sample_notification(**changes: Any) -> Notification:
    """A firing notification carrying raw driver values and HTML-looking text."""
    fields: dict[str, Any] = {
        "kind": "firing",
        "alert_name": "orders <late>",
        "status": "ALERT",
        "previous_status": "OK",
        "execution_id": "exec-0001",
        "timestamp": dt.datetime(2024, 3, 31, 1, 30, tzinfo=dt.UTC),
        "database": "warehouse",
        "description": "Orders older than <b>1h</b> & unshipped",
        "actual_value": decimal.Decimal("12.30"),
        "threshold": 10,
        "context": {
            "oldest": dt.datetime(2024, 3, 30, 23, 0, tzinfo=dt.UTC),
            "order_id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "blob": b"\x00\xffraw",
            "big": 2**70,
            "note": "<script>alert(1)</script>",
        },
        "labels": {"team": "ops"},
    }
    fields.update(changes)
    return Notification(**fields)

"""Email notifications over SMTP (aiosmtplib): STARTTLS, implicit TLS or plain."""

from __future__ import annotations

import asyncio
import contextlib
import html
import socket
import ssl
from collections.abc import Iterable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import aiosmtplib

from sqlsentinel.config import EmailChannelConfig, SmtpConfig
from sqlsentinel.errors import DeliveryError
from sqlsentinel.masking import mask
from sqlsentinel.notify import render_template
from sqlsentinel.notify.base import Channel, ChannelCheck, Notification
from sqlsentinel.values import display

_KIND_COLOURS = {"firing": "#c62828", "repeat": "#c62828", "resolved": "#2e7d32"}
_DEFAULT_COLOUR = "#ef6c00"  # errors


class EmailChannel(Channel):
    """Sends one multipart (text + HTML) message per notification to the recipients."""

    type = "email"

    def __init__(
        self,
        key: str,
        label: str,
        config: EmailChannelConfig,
        smtp: SmtpConfig,
        *,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(key, label)
        self.config = config
        self.smtp = smtp
        self.sender = config.from_address or smtp.from_address
        # An explicit channel timeout wins; otherwise the SMTP server's own setting.
        explicit = "timeout" in config.model_fields_set
        self.timeout = config.timeout if explicit else smtp.timeout
        self._tls_context = tls_context
        self.where = f"SMTP {smtp.host}:{smtp.effective_port}"

    async def send(self, notification: Notification) -> None:
        message = build_message(notification, self.config, self.sender)
        try:
            refused = await self._deliver(message)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise classify(exc, self.where, self.timeout) from None
        if refused:
            # Some recipients got the mail: a retry would send it to them twice.
            raise DeliveryError(
                f"{self.where}: accepted for some recipients only; refused: {refused}",
                retryable=False,
            )

    async def check(self) -> ChannelCheck:
        problem = self._config_problem()
        if problem:
            return ChannelCheck("unhealthy", problem)
        try:
            client = await self._connect(login=False)
            try:
                await client.noop(timeout=self.timeout)
            finally:
                await _quit(client, self.timeout)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            error = classify(exc, self.where, self.timeout)
            return ChannelCheck("unhealthy", str(error))
        warning = self._warning()
        if warning:
            return ChannelCheck("degraded", warning)
        return ChannelCheck("healthy", f"{self.where} answered EHLO and NOOP")

    async def _deliver(self, message: EmailMessage) -> str:
        client = await self._connect(login=True)
        try:
            errors, _ = await client.send_message(
                message,
                sender=self.sender,
                recipients=list(self.config.recipients),
                timeout=self.timeout,
            )
        finally:
            await _quit(client, self.timeout)
        return ", ".join(f"{a} ({r.code} {mask(r.message)})" for a, r in errors.items())

    async def _connect(self, *, login: bool) -> aiosmtplib.SMTP:
        smtp = self.smtp
        client = aiosmtplib.SMTP(
            hostname=smtp.host,
            port=smtp.effective_port,
            timeout=self.timeout,
            use_tls=smtp.security == "tls",
            start_tls=smtp.security == "starttls",
            tls_context=self._tls_context,
            # getfqdn() may stall on reverse DNS; the host name will do for EHLO.
            local_hostname=socket.gethostname() or "localhost",
        )
        try:
            await client.connect()
            await client.ehlo(timeout=self.timeout)
            if login and smtp.username:
                password = smtp.password or ""
                await client.login(smtp.username, password, timeout=self.timeout)
        except BaseException:
            _drop(client)
            raise
        return client

    def _config_problem(self) -> str | None:
        if "@" not in self.sender:
            return f"the sender {self.sender!r} is not an email address"
        if self.smtp.password and not self.smtp.username:
            return "smtp.password is set without smtp.username"
        return None

    def _warning(self) -> str | None:
        if self.smtp.username and self.smtp.security == "none":
            return f"{self.where}: the password would travel without TLS"
        return None


async def _quit(client: aiosmtplib.SMTP, timeout: float) -> None:
    """Say QUIT, then drop the connection: the message is accepted or failed by now."""
    if client.is_connected:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            await client.execute_command(b"QUIT", timeout=timeout)
    _drop(client)


def _drop(client: aiosmtplib.SMTP) -> None:
    """Close the socket at once, skipping the TLS goodbye, as smtplib does.

    Nothing is left to protect after QUIT, and a slow server could otherwise hold
    the socket open for the length of its TLS shutdown.
    """
    transport = client.transport
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    client.close()


def classify(exc: BaseException, where: str, timeout: float) -> DeliveryError:
    """Turn an SMTP failure into a DeliveryError: 4xx and network retryable, 5xx not."""
    if isinstance(exc, (aiosmtplib.SMTPTimeoutError, TimeoutError)):
        return DeliveryError(f"{where}: no answer within {timeout:g}s")
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        refused = ", ".join(
            f"{r.recipient} ({r.code} {mask(r.message)})" for r in exc.recipients
        )
        return DeliveryError(
            f"{where}: every recipient was refused: {refused}",
            retryable=any(400 <= c < 500 for c in codes),
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        action = _action(exc)
        return DeliveryError(
            f"{where}: {action} refused with {exc.code} {mask(exc.message)}",
            retryable=not 500 <= exc.code < 600,
        )
    if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
        reason = getattr(exc, "reason", None) or getattr(exc.__cause__, "reason", None)
        return DeliveryError(
            f"{where}: TLS failed ({reason or 'handshake error'}); "
            "check smtp.security, smtp.port and the server certificate",
            retryable=False,
        )
    if type(exc) is aiosmtplib.SMTPException or isinstance(
        exc, aiosmtplib.SMTPNotSupported
    ):
        # The bare class reports a missing extension (STARTTLS, AUTH): a setup problem.
        return DeliveryError(f"{where}: {mask(str(exc))}", retryable=False)
    return DeliveryError(f"{where}: {mask(str(exc)) or type(exc).__name__}")


def _action(exc: aiosmtplib.SMTPResponseException) -> str:
    names = {
        aiosmtplib.SMTPAuthenticationError: "login",
        aiosmtplib.SMTPSenderRefused: "the sender",
        aiosmtplib.SMTPRecipientRefused: "the recipient",
        aiosmtplib.SMTPDataError: "the message",
        aiosmtplib.SMTPHeloError: "EHLO",
        aiosmtplib.SMTPConnectResponseError: "the connection",
    }
    for kind, name in names.items():
        if isinstance(exc, kind):
            return name
    return "the server"


# ---------------------------------------------------------------------------
# The message


def build_message(
    notification: Notification, config: EmailChannelConfig, sender: str
) -> EmailMessage:
    """A multipart/alternative message: a text part and an escaped HTML part."""
    message = EmailMessage()
    message["Subject"] = _one_line(
        render_template(notification, config.subject, "subject")
    )
    message["From"] = sender
    message["To"] = ", ".join(config.recipients)
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid("sqlsentinel", domain=_domain(sender))
    # RFC 3834: tells vacation responders not to answer an automated message.
    message["Auto-Submitted"] = "auto-generated"
    message["X-SQLSentinel-Alert"] = _one_line(notification.alert_name)
    message["X-SQLSentinel-Execution-Id"] = _one_line(notification.execution_id)
    rows = summary_rows(notification)
    message.set_content(render_text(notification, rows))
    message.add_alternative(render_html(notification, rows), subtype="html")
    return message


def summary_rows(notification: Notification) -> list[tuple[str, str]]:
    """The labelled values both parts show, in order, rendered for people."""
    n = notification
    status = n.status + (f" (was {n.previous_status})" if n.previous_status else "")
    rows = [
        ("Status", status),
        ("Actual value", display(n.actual_value)),
        ("Threshold", display(n.threshold)),
        ("Database", n.database),
    ]
    rows += [(f"Context: {k}", display(v)) for k, v in n.context.items()]
    rows += [(f"Label: {k}", v) for k, v in n.labels.items()]
    rows += [("Execution ID", n.execution_id), ("Time", n.timestamp.isoformat())]
    return rows


def render_text(notification: Notification, rows: Iterable[tuple[str, str]]) -> str:
    lines = [notification.title, ""]
    if notification.description:
        lines += [notification.description, ""]
    lines += [f"{name}: {value}" for name, value in rows]
    if notification.error:
        lines += ["", "Error:", mask(notification.error)]
    return "\n".join(lines) + "\n"


def render_html(notification: Notification, rows: Iterable[tuple[str, str]]) -> str:
    e = html.escape
    colour = _KIND_COLOURS.get(notification.kind, _DEFAULT_COLOUR)
    cells = "".join(
        f'<tr><th align="left" style="padding:2px 12px 2px 0">{e(name)}</th>'
        f"<td><code>{e(value)}</code></td></tr>"
        for name, value in rows
    )
    parts = [
        '<!DOCTYPE html><html><body style="font-family:sans-serif">',
        f'<h2 style="color:{colour}">{e(notification.title)}</h2>',
    ]
    if notification.description:
        parts.append(f"<p>{e(notification.description)}</p>")
    parts.append(f"<table>{cells}</table>")
    if notification.error:
        parts.append(f"<h3>Error</h3><pre>{e(mask(notification.error))}</pre>")
    parts.append('<p style="color:#777">Sent by SQL Sentinel.</p></body></html>')
    return "\n".join(parts) + "\n"


def _one_line(text: str) -> str:
    """Header values may not hold line breaks (they would start new headers)."""
    return " ".join(text.split())


def _domain(address: str) -> str:
    # make_msgid() would look up this host's FQDN otherwise.
    return address.rpartition("@")[2].strip("<> ") or "localhost"

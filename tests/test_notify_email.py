"""Email channel against a real aiosmtpd server on loopback."""

from __future__ import annotations

import email.utils
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from receivers import SmtpReceiver, TlsFiles, sample_notification

from sqlsentinel.config import EmailChannelConfig, SmtpConfig, parse_config
from sqlsentinel.errors import ConfigError, DeliveryError
from sqlsentinel.notify import build_channel, smtp_settings
from sqlsentinel.notify.email import EmailChannel

PASSWORD = "s3cret-smtp-pass"


def email_config(**changes: Any) -> EmailChannelConfig:
    fields: dict[str, Any] = {
        "channel": "email",
        "recipients": ["ops@example.org", "dba@example.org"],
        "timeout": 5,
    }
    fields.update(changes)
    return EmailChannelConfig.model_validate(fields)


def smtp_for(rx: SmtpReceiver, **changes: Any) -> SmtpConfig:
    fields: dict[str, Any] = {"host": rx.host, "port": rx.port, "security": rx.security}
    fields.update(changes)
    return SmtpConfig.model_validate(fields)


def channel_for(
    rx: SmtpReceiver, config: EmailChannelConfig | None = None, **smtp: Any
) -> EmailChannel:
    channel = build_channel(config or email_config(), smtp_for(rx, **smtp))
    assert isinstance(channel, EmailChannel)
    return channel


@pytest.fixture
def trust_test_cert(tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make default TLS contexts trust the test certificate, as a user would."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files.cert))


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


async def test_message_has_both_parts_headers_and_subject(
    smtp_receiver: SmtpReceiver,
) -> None:
    config = email_config(subject="[{status}] {alert_name} = {actual_value}")
    channel = channel_for(smtp_receiver, config, from_address="sentinel@example.org")

    await channel.send(sample_notification())

    (mail,) = smtp_receiver.messages
    msg = mail.message
    assert mail.mail_from == "sentinel@example.org"
    assert mail.rcpt_tos == ["ops@example.org", "dba@example.org"]
    assert msg["Subject"] == "[ALERT] orders <late> = 12.30"
    assert msg["From"] == "sentinel@example.org"
    assert msg["To"] == "ops@example.org, dba@example.org"
    assert email.utils.parsedate_to_datetime(msg["Date"]).tzinfo is not None
    assert msg["Message-ID"].startswith("<") and msg["Message-ID"].endswith(
        "@example.org>"
    )
    assert msg.get_content_type() == "multipart/alternative"
    types = [part.get_content_type() for part in msg.iter_parts()]
    assert types == ["text/plain", "text/html"]


async def test_values_render_and_html_is_escaped(smtp_receiver: SmtpReceiver) -> None:
    await channel_for(smtp_receiver).send(sample_notification())

    msg = smtp_receiver.messages[0].message
    text = msg.get_body(("plain",)).get_content()
    page = msg.get_body(("html",)).get_content()
    for shown in (
        "Actual value: 12.30",
        "Threshold: 10",
        "Context: big: 1180591620717411303424",
        "Context: order_id: 12345678-1234-5678-1234-567812345678",
        "Context: blob: base64:AP9yYXc=",
        "Context: oldest: 2024-03-30T23:00:00+00:00",
        "Status: ALERT (was OK)",
        "Execution ID: exec-0001",
    ):
        assert shown in text
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "orders &lt;late&gt; is firing" in page
    assert "Orders older than &lt;b&gt;1h&lt;/b&gt; &amp; unshipped" in page


async def test_sender_falls_back_to_the_smtp_from_address(
    smtp_receiver: SmtpReceiver,
) -> None:
    channel = channel_for(smtp_receiver, from_address="relay@example.org")
    await channel.send(sample_notification())
    assert smtp_receiver.messages[0].message["From"] == "relay@example.org"

    own = email_config(from_address="team@example.org", name="own")
    await channel_for(smtp_receiver, own).send(sample_notification())
    assert smtp_receiver.messages[1].mail_from == "team@example.org"


async def test_subject_cannot_inject_headers(smtp_receiver: SmtpReceiver) -> None:
    notification = sample_notification(alert_name="x\r\nBcc: victim@example.org")
    await channel_for(smtp_receiver).send(notification)
    msg = smtp_receiver.messages[0].message
    assert msg["Bcc"] is None
    assert msg["Subject"] == "[ALERT] x Bcc: victim@example.org"


async def test_a_subject_that_fails_on_the_data_is_permanent(
    smtp_receiver: SmtpReceiver,
) -> None:
    channel = channel_for(smtp_receiver, email_config(subject="{timestamp.year}"))
    with pytest.raises(DeliveryError) as caught:
        await channel.send(sample_notification())
    assert caught.value.retryable is False
    assert "`subject` template" in str(caught.value)
    assert smtp_receiver.messages == []


async def test_error_notification_shows_the_masked_error(
    smtp_receiver: SmtpReceiver,
) -> None:
    notification = sample_notification(
        kind="error", status="ERROR", error="connect failed: password=hunter22 <x>"
    )
    await channel_for(smtp_receiver).send(notification)
    msg = smtp_receiver.messages[0].message
    assert "hunter22" not in msg.as_string()
    assert "password=***" in msg.get_body(("plain",)).get_content()
    assert "&lt;x&gt;" in msg.get_body(("html",)).get_content()


@pytest.mark.usefixtures("trust_test_cert")
async def test_starttls_delivers_over_tls(smtp_factory: Any) -> None:
    rx = smtp_factory(security="starttls")
    await channel_for(rx).send(sample_notification())
    (mail,) = rx.messages
    assert mail.tls is True


@pytest.mark.usefixtures("trust_test_cert")
async def test_implicit_tls_delivers(smtp_factory: Any) -> None:
    rx = smtp_factory(security="tls")
    await channel_for(rx).send(sample_notification())
    assert len(rx.messages) == 1


async def test_untrusted_certificate_is_a_permanent_tls_error(
    smtp_factory: Any,
) -> None:
    rx = smtp_factory(security="starttls")
    with pytest.raises(DeliveryError) as caught:
        await channel_for(rx).send(sample_notification())
    assert caught.value.retryable is False
    assert "TLS failed" in str(caught.value)
    assert rx.messages == []


@pytest.mark.usefixtures("trust_test_cert")
@pytest.mark.parametrize(
    ("security", "expected"),
    [("starttls", "STARTTLS extension not supported"), ("tls", "TLS failed")],
)
async def test_tls_against_a_plain_server_is_permanent(
    smtp_receiver: SmtpReceiver, security: str, expected: str
) -> None:
    channel = channel_for(smtp_receiver, security=security)
    with pytest.raises(DeliveryError) as caught:
        await channel.send(sample_notification())
    assert caught.value.retryable is False
    assert expected in str(caught.value)


async def test_login_against_a_server_without_auth_is_permanent(
    smtp_receiver: SmtpReceiver,
) -> None:
    channel = channel_for(smtp_receiver, username="alerts", password=PASSWORD)
    with pytest.raises(DeliveryError) as caught:
        await channel.send(sample_notification())
    assert caught.value.retryable is False
    assert "AUTH" in str(caught.value)
    assert PASSWORD not in str(caught.value)


@pytest.mark.usefixtures("trust_test_cert")
async def test_auth_success(smtp_factory: Any) -> None:
    rx = smtp_factory(security="starttls", auth=("alerts", PASSWORD))
    await channel_for(rx, username="alerts", password=PASSWORD).send(
        sample_notification()
    )
    (mail,) = rx.messages
    assert mail.login == "alerts"


@pytest.mark.usefixtures("trust_test_cert")
async def test_auth_failure_is_permanent_and_hides_the_password(
    smtp_factory: Any,
) -> None:
    rx = smtp_factory(security="starttls", auth=("alerts", PASSWORD))
    channel = channel_for(rx, username="alerts", password="wrong-" + PASSWORD)
    with pytest.raises(DeliveryError) as caught:
        await channel.send(sample_notification())
    assert caught.value.retryable is False
    assert "535" in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert rx.auth_failures >= 1  # one per mechanism the client tries
    assert rx.messages == []


async def test_refused_connection_is_retryable(closed_port: int) -> None:
    smtp = SmtpConfig(host="127.0.0.1", port=closed_port, security="none")
    channel = build_channel(email_config(), smtp)
    with pytest.raises(DeliveryError) as caught:
        await channel.send(sample_notification())
    assert caught.value.retryable is True
    assert f"127.0.0.1:{closed_port}" in str(caught.value)


async def test_silent_server_times_out_as_retryable(silent_port: int) -> None:
    smtp = SmtpConfig(host="127.0.0.1", port=silent_port, security="none")
    channel = build_channel(email_config(timeout=0.3), smtp)
    with pytest.raises(DeliveryError) as caught:
        await channel.send(sample_notification())
    assert caught.value.retryable is True
    assert "no answer within 0.3s" in str(caught.value)


async def test_rejected_recipient_550_is_permanent(smtp_receiver: SmtpReceiver) -> None:
    smtp_receiver.reject["ops@example.org"] = "550 5.1.1 no such user"
    smtp_receiver.reject["dba@example.org"] = "550 5.1.1 no such user"
    with pytest.raises(DeliveryError) as caught:
        await channel_for(smtp_receiver).send(sample_notification())
    assert caught.value.retryable is False
    assert "550" in str(caught.value)


async def test_temporary_rejection_451_is_retryable(
    smtp_receiver: SmtpReceiver,
) -> None:
    for address in ("ops@example.org", "dba@example.org"):
        smtp_receiver.reject[address] = "451 4.3.0 try again later"
    with pytest.raises(DeliveryError) as caught:
        await channel_for(smtp_receiver).send(sample_notification())
    assert caught.value.retryable is True


async def test_partial_rejection_is_reported_but_not_retried(
    smtp_receiver: SmtpReceiver,
) -> None:
    smtp_receiver.reject["dba@example.org"] = "550 5.1.1 no such user"
    with pytest.raises(DeliveryError) as caught:
        await channel_for(smtp_receiver).send(sample_notification())
    assert caught.value.retryable is False
    assert "dba@example.org" in str(caught.value)
    assert smtp_receiver.messages[0].rcpt_tos == ["ops@example.org"]


async def test_check_talks_to_the_server_without_sending(
    smtp_receiver: SmtpReceiver,
) -> None:
    result = await channel_for(smtp_receiver).check()
    assert result.status == "healthy"
    assert smtp_receiver.messages == []


async def test_check_reports_an_unreachable_server(closed_port: int) -> None:
    smtp = SmtpConfig(host="127.0.0.1", port=closed_port, security="none")
    result = await build_channel(email_config(), smtp).check()
    assert result.status == "unhealthy"


async def test_check_refuses_a_sender_that_is_not_an_address(
    smtp_receiver: SmtpReceiver,
) -> None:
    result = await channel_for(smtp_receiver, from_address="nobody").check()
    assert result.status == "unhealthy"
    assert "'nobody' is not an email address" in result.message


async def test_check_warns_about_a_password_without_tls(
    smtp_receiver: SmtpReceiver,
) -> None:
    channel = channel_for(smtp_receiver, username="u", password=PASSWORD)
    result = await channel.check()
    assert result.status == "degraded"
    assert PASSWORD not in result.message


# ---------------------------------------------------------------------------
# Legacy SMTP_* environment variables


def test_env_fallback_reads_the_legacy_names() -> None:
    smtp = SmtpConfig.from_env_fallback(
        {
            "SMTP_HOST": "mail.example.org",
            "SMTP_PORT": "2525",
            "SMTP_USERNAME": "bot@example.org",
            "SMTP_PASSWORD": PASSWORD,
            "SMTP_USE_TLS": "false",
        }
    )
    assert (smtp.host, smtp.effective_port, smtp.security) == (
        "mail.example.org",
        2525,
        "none",
    )
    assert (smtp.username, smtp.password) == ("bot@example.org", PASSWORD)
    assert smtp.from_address == "bot@example.org"


def test_env_fallback_defaults_match_the_legacy_ones() -> None:
    smtp = SmtpConfig.from_env_fallback({})
    assert (smtp.host, smtp.effective_port, smtp.security) == (
        "localhost",
        587,
        "starttls",
    )
    assert smtp.from_address == "sqlsentinel@localhost"
    implicit = SmtpConfig.from_env_fallback({"SMTP_PORT": "465"})
    assert implicit.security == "tls"


@pytest.mark.parametrize(
    ("env", "field"),
    [({"SMTP_PORT": "smtp"}, "SMTP_PORT"), ({"SMTP_USE_TLS": "maybe"}, "SMTP_USE_TLS")],
)
def test_env_fallback_names_the_bad_variable(env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SmtpConfig.from_env_fallback(env)
    assert field in str(caught.value)


async def test_config_without_smtp_section_uses_the_environment(
    smtp_receiver: SmtpReceiver,
) -> None:
    text = """
database: {url: "sqlite://"}
alerts:
  - name: a
    interval: 60
    query: select 'OK' as status
    notify:
      - channel: email
        recipients: [ops@example.org]
"""
    env = {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_receiver.port),
        "SMTP_USE_TLS": "false",
        "SMTP_FROM_ADDRESS": "legacy@example.org",
    }
    loaded = parse_config(text, "alerts.yaml", env)
    smtp = smtp_settings(loaded, env)
    await build_channel(loaded.alerts[0].notify[0], smtp).send(sample_notification())
    assert smtp_receiver.messages[0].mail_from == "legacy@example.org"

    with_section = parse_config(
        "smtp: {host: relay.example.org}\n" + text, "a.yaml", env
    )
    assert smtp_settings(with_section, env).host == "relay.example.org"

"""The log channel and the channel factory."""

from __future__ import annotations

import json
import logging

import pytest
from receivers import sample_notification

from sqlsentinel.config import (
    EmailChannelConfig,
    LogChannelConfig,
    SlackChannelConfig,
    SmtpConfig,
    WebhookChannelConfig,
)
from sqlsentinel.notify import build_channel
from sqlsentinel.notify.email import EmailChannel
from sqlsentinel.notify.log import LogChannel
from sqlsentinel.notify.slack import SlackChannel
from sqlsentinel.notify.webhook import WebhookChannel


async def test_one_line_at_the_configured_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="sqlsentinel.notify")
    channel = build_channel(
        LogChannelConfig(channel="log", level="error"), SmtpConfig()
    )

    await channel.send(sample_notification())

    (record,) = [r for r in caplog.records if r.name == "sqlsentinel.notify"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        "orders <late> is firing: status=ALERT value=12.30 threshold=10"
    )
    fields = record.context  # type: ignore[attr-defined]
    assert fields["alert_name"] == "orders <late>"
    assert fields["actual_value"] == "12.30"
    assert fields["context"]["big"] == 2**70
    assert fields["context"]["blob"] == "base64:AP9yYXc="
    assert fields["channel"] == "log"
    json.dumps(fields)  # the JSON formatter must be able to write it


async def test_default_level_is_warning_and_errors_are_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="sqlsentinel.notify")
    channel = build_channel(LogChannelConfig(channel="log"), SmtpConfig())
    await channel.send(
        sample_notification(kind="error", status="ERROR", error="password=hunter22")
    )
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "hunter22" not in record.getMessage()
    assert "hunter22" not in json.dumps(record.context)  # type: ignore[attr-defined]


async def test_log_channel_check_is_healthy() -> None:
    channel = build_channel(LogChannelConfig(channel="log"), SmtpConfig())
    assert (await channel.check()).status == "healthy"


def test_factory_builds_each_type_with_key_and_label() -> None:
    configs = [
        EmailChannelConfig(channel="email", recipients=["a@example.org"], name="ops"),
        SlackChannelConfig(channel="slack", webhook_url="https://example.com/s/T/B/C"),
        WebhookChannelConfig(channel="webhook", url="https://example.com/hook"),
        LogChannelConfig(channel="log"),
    ]
    kinds = [EmailChannel, SlackChannel, WebhookChannel, LogChannel]
    for config, kind in zip(configs, kinds, strict=True):
        channel = build_channel(config, SmtpConfig())
        assert type(channel) is kind
        assert channel.type == config.channel
        assert (channel.key, channel.label) == (config.key, config.label)
    assert build_channel(configs[0], SmtpConfig()).label == "ops"

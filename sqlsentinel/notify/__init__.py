"""Notification channels: email (SMTP), Slack, generic webhooks and the log."""

from __future__ import annotations

import os
from collections.abc import Mapping

from sqlsentinel.config import (
    ChannelConfig,
    EmailChannelConfig,
    LoadedConfig,
    LogChannelConfig,
    SlackChannelConfig,
    SmtpConfig,
    WebhookChannelConfig,
)
from sqlsentinel.errors import DeliveryError
from sqlsentinel.notify.base import Channel, ChannelCheck, Notification


def build_channel(config: ChannelConfig, smtp: SmtpConfig) -> Channel:
    """The channel that delivers to one configured destination.

    Raises ConfigError for settings validation cannot see (e.g. a bad header name).
    """
    if isinstance(config, EmailChannelConfig):
        from sqlsentinel.notify.email import EmailChannel

        return EmailChannel(config.key, config.label, config, smtp)
    if isinstance(config, SlackChannelConfig):
        from sqlsentinel.notify.slack import SlackChannel

        return SlackChannel(config.key, config.label, config)
    if isinstance(config, WebhookChannelConfig):
        from sqlsentinel.notify.webhook import WebhookChannel

        return WebhookChannel(config.key, config.label, config)
    if isinstance(config, LogChannelConfig):
        from sqlsentinel.notify.log import LogChannel

        return LogChannel(config.key, config.label, config)
    raise TypeError(f"unknown channel config {type(config).__name__}")


def smtp_settings(
    config: LoadedConfig, env: Mapping[str, str] | None = None
) -> SmtpConfig:
    """The file's ``smtp:`` section, or, without one, the legacy SMTP_* variables."""
    if "smtp" in config.raw.model_fields_set:
        return config.raw.smtp
    return SmtpConfig.from_env_fallback(os.environ if env is None else env)


def render_template(notification: Notification, template: str, key: str) -> str:
    """Fill a config template; a template that fails on this data is a permanent error."""
    try:
        return notification.render(template)
    except (KeyError, IndexError, AttributeError, ValueError, TypeError) as exc:
        message = f"the `{key}` template cannot be filled: {type(exc).__name__}: {exc}"
        raise DeliveryError(message, retryable=False) from None


__all__ = [
    "Channel",
    "ChannelCheck",
    "Notification",
    "build_channel",
    "render_template",
    "smtp_settings",
]

"""Slack notifications through an incoming webhook, as a Block Kit message."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import httpx

from sqlsentinel.config import SlackChannelConfig
from sqlsentinel.masking import mask, register_secret
from sqlsentinel.notify import render_template
from sqlsentinel.notify.base import Channel, ChannelCheck, Notification
from sqlsentinel.notify.http import MIN_HIDDEN, new_client, probe, send_request
from sqlsentinel.values import display

# Slack's own limits: header text 150, a section field 2000, a section text 3000.
HEADER_MAX = 150
FIELD_MAX = 2000
TEXT_MAX = 3000
# How much query context one message shows: at most this many fields, each this long.
CONTEXT_FIELDS_MAX = 10
CONTEXT_VALUE_MAX = 300

_EMOJI = {
    "firing": ":rotating_light:",
    "repeat": ":rotating_light:",
    "resolved": ":white_check_mark:",
    "error": ":warning:",
}


class SlackChannel(Channel):
    """Posts one Block Kit message per notification to a Slack incoming webhook."""

    type = "slack"

    def __init__(self, key: str, label: str, config: SlackChannelConfig) -> None:
        super().__init__(key, label)
        self.config = config
        # Also when built without load_config; the path alone is the token.
        path = urlsplit(config.webhook_url).path
        register_secret(config.webhook_url, path if len(path) >= MIN_HIDDEN else None)
        self._client: httpx.AsyncClient | None = None

    async def send(self, notification: Notification) -> None:
        body = json.dumps(build_payload(notification, self.config), ensure_ascii=False)
        if self._client is None:
            self._client = new_client(self.config.timeout)
        await send_request(
            self._client,
            "POST",
            self.config.webhook_url,
            content=body.encode("utf-8"),
            headers={"Content-Type": "application/json; charset=utf-8"},
            what="Slack webhook",
            timeout=self.config.timeout,
        )

    async def check(self) -> ChannelCheck:
        return await probe(self.config.webhook_url, self.config.timeout)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def build_payload(
    notification: Notification, config: SlackChannelConfig
) -> dict[str, Any]:
    """The webhook body: a ``text`` fallback and the Block Kit ``blocks``."""
    n = notification
    payload: dict[str, Any] = {
        "text": _cut(mask(_text(n, config)), TEXT_MAX),
        "blocks": _blocks(n),
    }
    overrides = {
        "channel": config.slack_channel,
        "username": config.username,
        "icon_emoji": config.icon_emoji,
    }
    payload.update({k: v for k, v in overrides.items() if v})
    return payload


def _text(n: Notification, config: SlackChannelConfig) -> str:
    """The top-level text Slack shows in notifications and where blocks cannot."""
    if config.text:
        return render_template(n, config.text, "text")
    return (
        f"{n.title}: status {n.status}, value {display(n.actual_value)}, "
        f"threshold {display(n.threshold)}"
    )


def _blocks(n: Notification) -> list[dict[str, Any]]:
    header = _cut(f"{_EMOJI.get(n.kind, '')} {n.title}".strip(), HEADER_MAX)
    status = n.status + (f" (was {n.previous_status})" if n.previous_status else "")
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": header, "emoji": True},
        },
        _fields_section(
            [
                ("Status", status),
                ("Actual value", display(n.actual_value)),
                ("Threshold", display(n.threshold)),
                ("Database", n.database),
            ],
            FIELD_MAX,
        ),
    ]
    if n.description:
        blocks.append(_text_section(_escape(n.description)))
    if n.context:
        blocks.append(_context_section(n.context))
    if n.error:
        error = _cut(_escape(mask(n.error)), TEXT_MAX - 20)
        blocks.append(_text_section(f"*Error*\n```{error}```"))
    footer = f"Execution `{_escape(n.execution_id)}` · {n.timestamp.isoformat()}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": footer}]})
    return blocks


def _context_section(context: dict[str, Any]) -> dict[str, Any]:
    items = [(str(k), display(v)) for k, v in context.items()]
    if len(items) > CONTEXT_FIELDS_MAX:
        hidden = len(items) - (CONTEXT_FIELDS_MAX - 1)
        items = [*items[: CONTEXT_FIELDS_MAX - 1], ("…", f"{hidden} more fields")]
    return _fields_section(items, CONTEXT_VALUE_MAX)


def _fields_section(items: list[tuple[str, str]], limit: int) -> dict[str, Any]:
    fields = [
        {"type": "mrkdwn", "text": _cut(f"*{_escape(name)}*\n{_escape(value)}", limit)}
        for name, value in items
    ]
    return {"type": "section", "fields": fields}


def _text_section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, TEXT_MAX)}}


def _escape(text: str) -> str:
    """Slack's mrkdwn escaping: data must not turn into links or @channel mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

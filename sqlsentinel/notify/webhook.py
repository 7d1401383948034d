"""Generic webhook notifications: the documented JSON body, optionally HMAC-signed."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from sqlsentinel.config import WebhookChannelConfig
from sqlsentinel.errors import ConfigError, ConfigIssue
from sqlsentinel.masking import mask, register_secret
from sqlsentinel.notify.base import Channel, ChannelCheck, Notification
from sqlsentinel.notify.http import describe, new_client, probe, send_request

TIMESTAMP_HEADER = "X-Sentinel-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value: ``sha256=`` + hex HMAC of ``timestamp.body``."""
    material = timestamp.encode("ascii") + b"." + body
    digest = hmac.new(secret.encode("utf-8"), material, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def encode_body(notification: Notification) -> bytes:
    """The exact bytes sent: compact UTF-8 JSON of Notification.to_payload()."""
    payload = notification.to_payload()
    if payload.get("error"):
        payload["error"] = mask(payload["error"])
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8")


class WebhookChannel(Channel):
    """Sends the notification as JSON with the configured method and headers."""

    type = "webhook"

    def __init__(
        self,
        key: str,
        label: str,
        config: WebhookChannelConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(key, label)
        self.config = config
        self._clock = clock
        register_secret(config.secret)
        self._headers = _checked_headers(config)
        self._client: httpx.AsyncClient | None = None

    def request_headers(self, body: bytes) -> dict[str, str]:
        """The headers of one delivery, with the signature when a secret is set."""
        headers = {"Content-Type": "application/json; charset=utf-8", **self._headers}
        if self.config.secret:
            timestamp = str(int(self._clock()))
            headers[TIMESTAMP_HEADER] = timestamp
            signature = sign(self.config.secret, timestamp, body)
            headers[self.config.signature_header] = signature
        return headers

    async def send(self, notification: Notification) -> None:
        body = encode_body(notification)
        if self._client is None:
            self._client = new_client(self.config.timeout)
        await send_request(
            self._client,
            self.config.method,
            self.config.url,
            content=body,
            headers=self.request_headers(body),
            what=f"webhook {describe(self.config.url)}",
            timeout=self.config.timeout,
        )

    async def check(self) -> ChannelCheck:
        return await probe(self.config.url, self.config.timeout)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _checked_headers(config: WebhookChannelConfig) -> dict[str, Any]:
    """Refuse headers HTTP cannot carry, naming the header but never its value."""
    headers = dict(config.headers)
    names = [*headers, config.signature_header]
    for name in names:
        if not name or any(c in name for c in " \t\r\n:") or not name.isascii():
            raise _header_error(name, "is not a valid HTTP header name")
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            raise _header_error(name, "holds a line break")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            problem = "holds characters HTTP headers cannot carry"
            raise _header_error(name, problem) from None
    return headers


def _header_error(name: str, problem: str) -> ConfigError:
    return ConfigError([ConfigIssue("config", f"notify.headers.{name}", problem)])

"""What the Slack and webhook channels share: sending, classifying failures, probing."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ipaddress
import logging
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from sqlsentinel import __version__
from sqlsentinel.errors import DeliveryError
from sqlsentinel.masking import mask
from sqlsentinel.notify.base import ChannelCheck

USER_AGENT = f"sqlsentinel/{__version__}"
MAX_RETRY_AFTER = 3600.0  # a receiver may not park a delivery for more than an hour
PROBE_TIMEOUT = 3.0
_BODY_EXCERPT = 200
MIN_HIDDEN = 8  # shorter paths, such as /hook, are too common to hide

# httpx logs every request URL at INFO; a Slack URL is itself the secret.
for _name in ("httpx", "httpcore"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)


def describe(url: str) -> str:
    """The part of a URL safe to show: scheme, host and port, never path or query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def new_client(timeout: float) -> httpx.AsyncClient:
    """An HTTP client whose every step (connect, write, read, pool) has ``timeout``."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
    )


async def send_request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    content: bytes,
    headers: dict[str, str],
    what: str,
    timeout: float,
) -> httpx.Response:
    """Send one request; raise DeliveryError, classified, for anything but a 2xx."""
    try:
        response = await client.request(method, url, content=content, headers=headers)
    except httpx.TimeoutException:
        raise DeliveryError(f"{what}: no answer within {timeout:g}s") from None
    except httpx.TransportError as exc:
        # A request we cannot even form will not improve; a network failure may.
        permanent = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)
        reason = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        reason = _strip_url(mask(reason), url)
        raise DeliveryError(
            f"{what}: {reason}", retryable=not isinstance(exc, permanent)
        ) from None
    except httpx.InvalidURL:
        raise DeliveryError(f"{what}: the URL is not valid", retryable=False) from None
    raise_for_status(response, what, url)
    return response


def raise_for_status(response: httpx.Response, what: str, url: str) -> None:
    """Classify a non-2xx answer: 429 and 5xx retryable, other 4xx and 3xx not."""
    status = response.status_code
    if 200 <= status < 300:
        return
    excerpt = _strip_url(mask(response.text[:_BODY_EXCERPT].strip()), url)
    detail = f"{what}: HTTP {status}" + (f" ({excerpt})" if excerpt else "")
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 429 or status >= 500:
        raise DeliveryError(detail, retryable=True, retry_after=retry_after)
    raise DeliveryError(detail, retryable=False)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = datetime.fromtimestamp(time.time() if now is None else now, UTC)
        seconds = (when - current).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _strip_url(text: str, url: str) -> str:
    """Hide the URL, its path and its query in a text: any of them may hold a token."""
    parts = urlsplit(url)
    text = text.replace(url, describe(url))
    for piece in (parts.path, parts.query):
        if len(piece) >= MIN_HIDDEN:
            text = text.replace(piece, "***")
    return text


async def probe(url: str, timeout: float) -> ChannelCheck:
    """TCP-connect to the URL's host:port if it is an IP address: no DNS, no request."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return ChannelCheck("healthy", f"configured for {describe(url)} (not probed)")
    wait = min(timeout, PROBE_TIMEOUT)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), wait)
    except TimeoutError:
        message = f"{describe(url)}: no TCP answer within {wait:g}s"
        return ChannelCheck("unhealthy", message)
    except OSError as exc:
        return ChannelCheck("unhealthy", f"{describe(url)}: {exc.strerror or exc}")
    writer.close()
    with contextlib.suppress(OSError):  # the connect already proved reachability
        await writer.wait_closed()
    return ChannelCheck("healthy", f"{describe(url)} accepts TCP connections")

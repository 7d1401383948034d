"""Generic webhook channel against a real aiohttp receiver on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from receivers import HttpReceiver, ReceivedRequest, Reply, sample_notification

from sqlsentinel.config import SmtpConfig, WebhookChannelConfig
from sqlsentinel.errors import ConfigError, DeliveryError
from sqlsentinel.notify import build_channel
from sqlsentinel.notify.webhook import WebhookChannel

SECRET = "whsec-0123456789abcdef"
TOKEN = "Bearer tok-9f8e7d6c5b4a"


def webhook(rx: HttpReceiver, **changes: Any) -> WebhookChannel:
    fields: dict[str, Any] = {
        "channel": "webhook",
        "url": rx.url("/hook"),
        "timeout": 5,
    }
    fields.update(changes)
    channel = build_channel(WebhookChannelConfig.model_validate(fields), SmtpConfig())
    assert isinstance(channel, WebhookChannel)
    return channel


async def send(channel: WebhookChannel, **changes: Any) -> None:
    try:
        await channel.send(sample_notification(**changes))
    finally:
        await channel.aclose()


def verify(request: ReceivedRequest, secret: str, header: str) -> bool:
    """What a receiver does, written independently of the product code."""
    timestamp = request.headers["x-sentinel-timestamp"]
    signed = timestamp.encode() + b"." + request.body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, request.headers[header.lower()])


async def test_body_is_the_documented_payload(http_receiver: HttpReceiver) -> None:
    await send(webhook(http_receiver))

    (request,) = http_receiver.requests
    assert request.method == "POST"
    assert request.path == "/hook"
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert request.headers["user-agent"].startswith("sqlsentinel/")
    assert request.json() == {
        "version": 1,
        "kind": "firing",
        "alert": {
            "name": "orders <late>",
            "description": "Orders older than <b>1h</b> & unshipped",
            "database": "warehouse",
            "labels": {"team": "ops"},
        },
        "status": "ALERT",
        "previous_status": "OK",
        "actual_value": "12.30",
        "threshold": 10,
        "context": {
            "oldest": "2024-03-30T23:00:00+00:00",
            "order_id": "12345678-1234-5678-1234-567812345678",
            "blob": "base64:AP9yYXc=",
            "big": 2**70,
            "note": "<script>alert(1)</script>",
        },
        "error": None,
        "execution_id": "exec-0001",
        "timestamp": "2024-03-31T01:30:00+00:00",
    }
    assert "x-sentinel-signature" not in request.headers


async def test_signature_verifies_by_recomputation(http_receiver: HttpReceiver) -> None:
    await send(webhook(http_receiver, secret=SECRET))
    (request,) = http_receiver.requests
    assert request.headers["x-sentinel-signature"].startswith("sha256=")
    assert request.headers["x-sentinel-timestamp"].isdigit()
    assert verify(request, SECRET, "X-Sentinel-Signature")
    assert not verify(request, "another-secret", "X-Sentinel-Signature")


async def test_signature_covers_the_timestamp(http_receiver: HttpReceiver) -> None:
    channel = webhook(http_receiver, secret=SECRET)
    channel._clock = lambda: 1_700_000_000.9
    await send(channel)
    request = http_receiver.requests[0]
    assert request.headers["x-sentinel-timestamp"] == "1700000000"
    forged = ReceivedRequest(
        request.method,
        request.path,
        request.query,
        {**request.headers, "x-sentinel-timestamp": "1800000000"},
        request.body,
    )
    assert verify(request, SECRET, "X-Sentinel-Signature")
    assert not verify(forged, SECRET, "X-Sentinel-Signature")


@pytest.mark.parametrize("method", ["PUT", "patch"])
async def test_method_headers_and_signature_header(
    http_receiver: HttpReceiver, method: str
) -> None:
    channel = webhook(
        http_receiver,
        method=method,
        headers={"Authorization": TOKEN, "X-Team": "ops"},
        secret=SECRET,
        signature_header="X-Hub-Signature-256",
    )
    await send(channel)
    request = http_receiver.requests[0]
    assert request.method == method.upper()
    assert request.headers["authorization"] == TOKEN
    assert request.headers["x-team"] == "ops"
    assert verify(request, SECRET, "X-Hub-Signature-256")


async def test_error_text_is_masked_in_the_body(http_receiver: HttpReceiver) -> None:
    await send(
        webhook(http_receiver),
        kind="error",
        status="ERROR",
        error="login failed: password=hunter22",
    )
    assert http_receiver.requests[0].json()["error"] == "login failed: password=***"


async def test_hanging_receiver_times_out(http_receiver: HttpReceiver) -> None:
    http_receiver.reply = Reply.hang()
    with pytest.raises(DeliveryError) as caught:
        await send(webhook(http_receiver, timeout=0.3))
    assert caught.value.retryable is True
    assert "no answer within 0.3s" in str(caught.value)


async def test_rate_limit_and_server_errors_are_retryable(
    http_receiver: HttpReceiver,
) -> None:
    http_receiver.enqueue(Reply.rate_limited("12"), Reply.server_error())
    channel = webhook(http_receiver)
    with pytest.raises(DeliveryError) as limited:
        await channel.send(sample_notification())
    with pytest.raises(DeliveryError) as failed:
        await channel.send(sample_notification())
    await send(channel)  # the receiver answers 200 again
    assert (limited.value.retryable, limited.value.retry_after) == (True, 12.0)
    assert (failed.value.retryable, failed.value.retry_after) == (True, None)
    assert len(http_receiver.requests) == 3


async def test_client_errors_are_permanent(http_receiver: HttpReceiver) -> None:
    http_receiver.reply = Reply.bad_request("bad signature")
    with pytest.raises(DeliveryError) as caught:
        await send(webhook(http_receiver, secret=SECRET))
    assert caught.value.retryable is False
    assert "HTTP 400 (bad signature)" in str(caught.value)


async def test_redirects_are_not_followed(http_receiver: HttpReceiver) -> None:
    http_receiver.reply = Reply(302, "", {"Location": "http://127.0.0.1:1/elsewhere"})
    with pytest.raises(DeliveryError) as caught:
        await send(webhook(http_receiver))
    assert caught.value.retryable is False
    assert len(http_receiver.requests) == 1


async def test_secrets_stay_out_of_error_messages(http_receiver: HttpReceiver) -> None:
    http_receiver.reply = Reply.bad_request(f"rejected {TOKEN} with {SECRET}")
    url = http_receiver.url("/hook?token=qs-secret-value")
    channel = webhook(
        http_receiver, url=url, secret=SECRET, headers={"Authorization": TOKEN}
    )
    with pytest.raises(DeliveryError) as caught:
        await send(channel)
    message = str(caught.value)
    for secret in (SECRET, "tok-9f8e7d6c5b4a", "qs-secret-value"):
        assert secret not in message


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"signature_header": "Bad Header"}, "not a valid HTTP header name"),
        ({"headers": {"X-Token": "naïve→"}}, "cannot carry"),
    ],
)
def test_headers_http_cannot_carry_are_config_errors(
    changes: dict[str, Any], problem: str
) -> None:
    config = WebhookChannelConfig(
        channel="webhook", url="http://127.0.0.1:9/hook", **changes
    )
    with pytest.raises(ConfigError) as caught:
        build_channel(config, SmtpConfig())
    assert problem in str(caught.value)
    assert "naïve" not in str(caught.value)


async def test_check_probes_without_sending(http_receiver: HttpReceiver) -> None:
    result = await webhook(http_receiver).check()
    assert result.status == "healthy"
    assert http_receiver.requests == []


def test_body_bytes_are_compact_utf8_json() -> None:
    from sqlsentinel.notify.webhook import encode_body

    body = encode_body(sample_notification(alert_name="café"))
    assert b"caf\xc3\xa9" in body
    assert b": " not in body
    assert json.loads(body)["alert"]["name"] == "café"

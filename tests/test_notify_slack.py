"""Slack channel against a real aiohttp receiver on loopback."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
from receivers import HttpReceiver, Reply, sample_notification

from sqlsentinel.config import SlackChannelConfig, SmtpConfig
from sqlsentinel.errors import DeliveryError
from sqlsentinel.notify import build_channel
from sqlsentinel.notify.http import parse_retry_after
from sqlsentinel.notify.slack import CONTEXT_FIELDS_MAX, CONTEXT_VALUE_MAX, SlackChannel

HOOK_PATH = "/services/T0001/B0001/XoXsEcReTtOkEn42"


def slack(rx: HttpReceiver, **changes: Any) -> SlackChannel:
    fields: dict[str, Any] = {
        "channel": "slack",
        "webhook_url": rx.url(HOOK_PATH),
        "timeout": 5,
    }
    fields.update(changes)
    channel = build_channel(SlackChannelConfig.model_validate(fields), SmtpConfig())
    assert isinstance(channel, SlackChannel)
    return channel


async def send(channel: SlackChannel, **changes: Any) -> None:
    try:
        await channel.send(sample_notification(**changes))
    finally:
        await channel.aclose()


def field_texts(block: dict[str, Any]) -> list[str]:
    return [f["text"] for f in block["fields"]]


async def test_block_kit_message(http_receiver: HttpReceiver) -> None:
    await send(slack(http_receiver))

    (request,) = http_receiver.requests
    assert request.method == "POST"
    assert request.path == HOOK_PATH
    assert request.headers["content-type"].startswith("application/json")
    body = request.json()
    header, summary, description, context, footer = body["blocks"]
    assert header["type"] == "header"
    assert header["text"] == {
        "type": "plain_text",
        "text": ":rotating_light: orders <late> is firing",
        "emoji": True,
    }
    assert field_texts(summary) == [
        "*Status*\nALERT (was OK)",
        "*Actual value*\n12.30",
        "*Threshold*\n10",
        "*Database*\nwarehouse",
    ]
    assert description["text"]["text"] == (
        "Orders older than &lt;b&gt;1h&lt;/b&gt; &amp; unshipped"
    )
    assert field_texts(context) == [
        "*oldest*\n2024-03-30T23:00:00+00:00",
        "*order_id*\n12345678-1234-5678-1234-567812345678",
        "*blob*\nbase64:AP9yYXc=",
        "*big*\n1180591620717411303424",
        "*note*\n&lt;script&gt;alert(1)&lt;/script&gt;",
    ]
    assert footer["type"] == "context"
    assert "`exec-0001`" in footer["elements"][0]["text"]
    assert (
        body["text"]
        == "orders <late> is firing: status ALERT, value 12.30, threshold 10"
    )
    assert "channel" not in body
    assert "username" not in body


async def test_text_template_and_overrides(http_receiver: HttpReceiver) -> None:
    channel = slack(
        http_receiver,
        text="{alert_name}: {status} ({actual_value})",
        slack_channel="#db-alerts",
        username="SQL Sentinel",
        icon_emoji=":bell:",
    )
    await send(channel)
    body = http_receiver.requests[0].json()
    assert body["text"] == "orders <late>: ALERT (12.30)"
    assert (body["channel"], body["username"], body["icon_emoji"]) == (
        "#db-alerts",
        "SQL Sentinel",
        ":bell:",
    )


async def test_a_template_that_fails_on_the_data_is_permanent(
    http_receiver: HttpReceiver,
) -> None:
    channel = slack(http_receiver, text="{actual_value[40]}")
    with pytest.raises(DeliveryError) as caught:
        await send(channel)
    assert caught.value.retryable is False
    assert "`text` template" in str(caught.value)
    assert http_receiver.requests == []


async def test_context_fields_are_bounded(http_receiver: HttpReceiver) -> None:
    context = {f"col{i}": "x" * 5000 for i in range(15)}
    await send(slack(http_receiver), context=context)
    blocks = http_receiver.requests[0].json()["blocks"]
    fields = field_texts(blocks[3])
    assert len(fields) == CONTEXT_FIELDS_MAX
    assert fields[-1] == "*…*\n6 more fields"
    assert all(len(text) <= CONTEXT_VALUE_MAX for text in fields)


async def test_error_block_and_resolved_header(http_receiver: HttpReceiver) -> None:
    await send(
        slack(http_receiver),
        kind="error",
        status="ERROR",
        error="syntax error near <x>; password=hunter22",
    )
    blocks = http_receiver.requests[0].json()["blocks"]
    assert blocks[0]["text"]["text"] == ":warning: orders <late> failed to run"
    error = blocks[-2]["text"]["text"]
    assert error.startswith("*Error*\n```syntax error near &lt;x&gt;")
    assert "hunter22" not in error


async def test_rate_limit_honours_retry_after(http_receiver: HttpReceiver) -> None:
    http_receiver.reply = Reply.rate_limited("7")
    with pytest.raises(DeliveryError) as caught:
        await send(slack(http_receiver))
    assert caught.value.retryable is True
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize(
    ("reply", "retryable"),
    [(Reply.server_error(), True), (Reply.bad_request("invalid_payload"), False)],
)
async def test_status_classification(
    http_receiver: HttpReceiver, reply: Reply, retryable: bool
) -> None:
    http_receiver.reply = reply
    with pytest.raises(DeliveryError) as caught:
        await send(slack(http_receiver))
    assert caught.value.retryable is retryable
    assert f"HTTP {reply.status}" in str(caught.value)


async def test_webhook_url_never_appears_in_errors_or_logs(
    http_receiver: HttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    http_receiver.reply = Reply.bad_request(f"no such hook {HOOK_PATH}")
    with pytest.raises(DeliveryError) as caught:
        await send(slack(http_receiver))
    assert "XoXsEcReTtOkEn42" not in str(caught.value)
    assert "XoXsEcReTtOkEn42" not in caplog.text


async def test_hanging_receiver_times_out(http_receiver: HttpReceiver) -> None:
    http_receiver.reply = Reply.hang()
    with pytest.raises(DeliveryError) as caught:
        await send(slack(http_receiver, timeout=0.3))
    assert caught.value.retryable is True
    assert "no answer within 0.3s" in str(caught.value)
    assert "XoXsEcReTtOkEn42" not in str(caught.value)


async def test_refused_connection_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = SlackChannelConfig(
        channel="slack", webhook_url=f"http://127.0.0.1:{port}{HOOK_PATH}"
    )
    channel = build_channel(config, SmtpConfig())
    with pytest.raises(DeliveryError) as caught:
        await channel.send(sample_notification())
    await channel.aclose()
    assert caught.value.retryable is True
    assert "XoXsEcReTtOkEn42" not in str(caught.value)


async def test_check_probes_tcp_without_sending(http_receiver: HttpReceiver) -> None:
    result = await slack(http_receiver).check()
    assert result.status == "healthy"
    assert http_receiver.requests == []


async def test_check_reports_an_unreachable_host() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = SlackChannelConfig(
        channel="slack", webhook_url=f"http://127.0.0.1:{port}{HOOK_PATH}"
    )
    result = await build_channel(config, SmtpConfig()).check()
    assert result.status == "unhealthy"
    assert "XoXsEcReTtOkEn42" not in result.message


async def test_named_hosts_are_not_resolved_by_check() -> None:
    config = SlackChannelConfig(
        channel="slack", webhook_url="https://hooks.slack.com/services/T/B/XoXsEcReT"
    )
    result = await build_channel(config, SmtpConfig()).check()
    assert result.status == "healthy"
    assert "not probed" in result.message
    assert "XoXsEcReT" not in result.message


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("30", 30.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("999999", 3600.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("soon", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(header, now=now) == seconds

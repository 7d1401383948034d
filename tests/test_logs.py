"""Structured logs: fields, context across tasks and threads, masking, configuration."""

from __future__ import annotations

import asyncio
import decimal
import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sqlsentinel import logs
from sqlsentinel.masking import register_secret

DOC = Path(__file__).resolve().parents[1] / "docs" / "operations" / "logging-schema.md"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Opaque:
    def __str__(self) -> str:
        return "opaque driver value"


class TTYStream(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Give each test a clean environment and put the root logger back afterwards."""
    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)
    monkeypatch.delenv(logs.LEVEL_ENV, raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    libraries = {name: logging.getLogger(name).level for name in logs.LIBRARY_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lib_level in libraries.items():
        logging.getLogger(name).setLevel(lib_level)


@pytest.fixture
def out() -> io.StringIO:
    stream = io.StringIO()
    logs.configure_logging("json", "DEBUG", stream)
    return stream


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    """The JSON records this module's logger wrote (not asyncio's debug lines)."""
    parsed = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [r for r in parsed if r["logger"] == "sqlsentinel.test"]


log = logging.getLogger("sqlsentinel.test")


class TestJsonRecords:
    def test_record_has_the_documented_fields(self, out: io.StringIO) -> None:
        with logs.new_correlation("cid-1"), logs.bind(alert_name="orders"):
            log.info("alert executed", extra={"context": {"status": "ALERT"}})

        [record] = records(out)
        assert ISO_UTC.match(record["timestamp"])
        assert record["level"] == "INFO"
        assert record["logger"] == "sqlsentinel.test"
        assert record["message"] == "alert executed"
        assert record["correlation_id"] == "cid-1"
        assert record["context"] == {"alert_name": "orders", "status": "ALERT"}

    def test_call_context_wins_over_bound_context_and_stray_extras_are_kept(
        self, out: io.StringIO
    ) -> None:
        with logs.bind(alert_name="orders", status="OK"):
            log.info("x", extra={"channel": "slack", "context": {"status": "ERROR"}})

        assert records(out)[0]["context"] == {
            "alert_name": "orders",
            "status": "ERROR",
            "channel": "slack",
        }

    def test_timestamp_is_the_record_time_in_utc(self, out: io.StringIO) -> None:
        before = datetime.now(UTC)
        log.info("x")
        after = datetime.now(UTC)

        stamp = datetime.fromisoformat(records(out)[0]["timestamp"])
        assert stamp.utcoffset() == timedelta(0)
        assert before - timedelta(milliseconds=1) <= stamp <= after

    def test_exception_is_one_field_and_the_record_one_line(
        self, out: io.StringIO
    ) -> None:
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError:
            log.exception("execution failed")

        assert len(out.getvalue().splitlines()) == 1
        record = records(out)[0]
        assert "RuntimeError: boom\nsecond line" in record["exception"]
        assert "Traceback" in record["exception"]

    def test_non_ascii_is_written_readable(self, out: io.StringIO) -> None:
        log.info("café ✓", extra={"context": {"alert_name": "注文"}})

        assert "café ✓" in out.getvalue()
        assert "注文" in out.getvalue()
        assert "\\u" not in out.getvalue()

    def test_driver_values_are_converted_not_dropped(self, out: io.StringIO) -> None:
        value_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
        context = {
            "actual_value": decimal.Decimal("12.30"),
            "at": datetime(2026, 5, 1, 8, 0, tzinfo=UTC),
            "id": value_id,
            "raw": b"\x00\xff",
            "nan": float("nan"),
            "obj": Opaque(),
        }

        log.info("x", extra={"context": context})

        got = records(out)[0]["context"]
        assert got["actual_value"] == "12.30"
        assert got["at"] == "2026-05-01T08:00:00+00:00"
        assert got["id"] == str(value_id)
        assert got["raw"] == "base64:AP8="
        assert got["nan"] == "NaN"
        assert got["obj"] == "opaque driver value"

    def test_secrets_are_masked_everywhere(self, out: io.StringIO) -> None:
        register_secret("s3cr3t-token-value")
        dsn = "postgresql://app:hunter2@db.example.com/prod"
        try:
            raise ConnectionError(f"cannot reach {dsn}")
        except ConnectionError:
            log.exception(
                "connect to %s failed",
                dsn,
                extra={"context": {"url": dsn, "nested": ["s3cr3t-token-value"]}},
            )

        text = out.getvalue()
        assert "hunter2" not in text
        assert "s3cr3t-token-value" not in text
        record = records(out)[0]
        assert (
            record["message"]
            == "connect to postgresql://app:***@db.example.com/prod failed"
        )
        assert record["context"]["nested"] == ["***"]

    def test_documented_fields_are_the_fields_produced(self, out: io.StringIO) -> None:
        table = DOC.read_text().split("## JSON format", 1)[1].split("###", 1)[0]
        documented = set(re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE))

        with logs.new_correlation():
            try:
                raise ValueError("x")
            except ValueError:
                log.error("failed", exc_info=True, stack_info=True)

        assert documented == set(records(out)[0])

    def test_without_exception_or_correlation_the_fixed_fields_remain(
        self, out: io.StringIO
    ) -> None:
        log.warning("plain")

        record = records(out)[0]
        assert set(record) == {
            "timestamp",
            "level",
            "logger",
            "message",
            "correlation_id",
            "context",
        }
        assert record["correlation_id"] is None
        assert record["context"] == {}


class TestContextPropagation:
    async def test_correlation_id_follows_asyncio_tasks(self, out: io.StringIO) -> None:
        async def work() -> None:
            log.info("in task")

        with logs.new_correlation("tick-1"):
            await asyncio.gather(
                asyncio.create_task(work()), asyncio.create_task(work())
            )

        assert [r["correlation_id"] for r in records(out)] == ["tick-1", "tick-1"]

    async def test_to_thread_and_the_executor_helper_carry_context(
        self, out: io.StringIO
    ) -> None:
        def work(label: str) -> str:
            log.info(label)
            return label

        with (
            ThreadPoolExecutor(1) as pool,
            logs.new_correlation("tick-2"),
            logs.bind(alert_name="orders"),
        ):
            await asyncio.to_thread(work, "to_thread")
            result = await logs.run_in_executor_with_context(pool, work, "helper")
            await asyncio.get_running_loop().run_in_executor(pool, work, "plain")

        got = {r["message"]: (r["correlation_id"], r["context"]) for r in records(out)}
        assert result == "helper"
        assert got["to_thread"] == ("tick-2", {"alert_name": "orders"})
        assert got["helper"] == ("tick-2", {"alert_name": "orders"})
        # Why the helper exists: the plain executor call loses the context.
        assert got["plain"] == (None, {})

    def test_bind_restores_the_outer_context(self) -> None:
        with logs.bind(a=1):
            with logs.bind(b=2):
                assert logs.current_context() == {"a": 1, "b": 2}
            assert logs.current_context() == {"a": 1}
        assert logs.current_context() == {}


class TestConfiguration:
    def test_json_is_the_default_off_a_terminal_and_text_on_one(self) -> None:
        plain, tty = io.StringIO(), TTYStream()

        logs.configure_logging(stream=plain)
        log.warning("to file")
        logs.configure_logging(stream=tty)
        log.warning("to terminal")

        assert json.loads(plain.getvalue())["message"] == "to file"
        assert " WARNING sqlsentinel.test: to terminal" in tty.getvalue()

    def test_environment_chooses_format_and_level(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(logs.FORMAT_ENV, "text")
        monkeypatch.setenv(logs.LEVEL_ENV, "warning")
        stream = io.StringIO()

        logs.configure_logging(stream=stream)
        log.info("hidden")
        log.warning("shown", extra={"context": {"alert_name": "a b"}})

        assert "hidden" not in stream.getvalue()
        assert 'shown alert_name="a b"' in stream.getvalue()

    def test_options_win_over_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(logs.FORMAT_ENV, "text")
        stream = io.StringIO()

        logs.configure_logging("json", "INFO", stream)
        log.info("x")

        assert json.loads(stream.getvalue())["message"] == "x"

    @pytest.mark.parametrize(
        ("fmt", "level", "named"),
        [("xml", None, "--log-format"), (None, "LOUD", "--log-level")],
    )
    def test_bad_option_values_are_named(
        self, fmt: str | None, level: str | None, named: str
    ) -> None:
        with pytest.raises(ValueError, match=named):
            logs.configure_logging(fmt, level, io.StringIO())

    def test_bad_environment_value_is_named(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(logs.FORMAT_ENV, "yaml")

        with pytest.raises(ValueError, match="SQLSENTINEL_LOG_FORMAT must be one of"):
            logs.configure_logging(stream=io.StringIO())

    def test_libraries_stay_at_warning_unless_debugging(self) -> None:
        logs.configure_logging("json", "INFO", io.StringIO())
        quiet = logging.getLogger("aiohttp.access").getEffectiveLevel()
        logs.configure_logging("json", "DEBUG", io.StringIO())
        loud = logging.getLogger("aiohttp.access").getEffectiveLevel()

        assert (quiet, loud) == (logging.WARNING, logging.DEBUG)

    def test_reconfiguring_replaces_the_handler_instead_of_adding_one(self) -> None:
        first, second = io.StringIO(), io.StringIO()

        logs.configure_logging("json", "INFO", first)
        logs.configure_logging("json", "INFO", second)
        log.info("once")

        assert first.getvalue() == ""
        assert len(second.getvalue().splitlines()) == 1

    def test_text_format_masks_and_shows_tracebacks(self) -> None:
        stream = io.StringIO()
        logs.configure_logging("text", "INFO", stream)

        with logs.new_correlation("cid-9"):
            try:
                raise KeyError("k")
            except KeyError:
                log.exception("lookup of https://u:pw12345@example.com failed")

        first, *rest = stream.getvalue().splitlines()
        assert first.endswith("https://u:***@example.com failed correlation_id=cid-9")
        assert rest[0] == "Traceback (most recent call last):"

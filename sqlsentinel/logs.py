"""Structured logging: context carried across tasks and threads, JSON or text output.

Use ``logger.info("event text", extra={"context": {...}})`` for one-off fields and
``with bind(alert_name=..., execution_id=...):`` for fields that every line of a
piece of work should carry. ``correlation_id`` is set once per scheduled tick or
CLI invocation with ``new_correlation()``. The JSON fields are documented in
docs/operations/logging-schema.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import IO, Any, TypeVar

from pythonjsonlogger.json import JsonFormatter

from sqlsentinel.masking import mask
from sqlsentinel.values import to_json_safe

T = TypeVar("T")

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sqlsentinel_correlation_id", default=None
)
log_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "sqlsentinel_log_context",
    default={},  # noqa: B039 - never mutated, only replaced
)

FORMAT_ENV = "SQLSENTINEL_LOG_FORMAT"
LEVEL_ENV = "SQLSENTINEL_LOG_LEVEL"
FORMATS = ("json", "text")
# Third-party loggers that are chatty at INFO; they stay at WARNING unless debugging.
LIBRARY_LOGGERS = (
    "aiohttp",
    "asyncio",
    "sqlalchemy",
    "httpx",
    "httpcore",
    "urllib3",
    "docker",
    "aiosmtplib",
)
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "context",
}
_CID_ATTR = "_sqlsentinel_correlation_id"
_CONTEXT_ATTR = "_sqlsentinel_context"


def new_id() -> str:
    return uuid.uuid4().hex


@contextlib.contextmanager
def new_correlation(value: str | None = None) -> Iterator[str]:
    """Run a block of work under a fresh correlation id."""
    cid = value or new_id()
    token = correlation_id.set(cid)
    try:
        yield cid
    finally:
        correlation_id.reset(token)


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add fields to the ``context`` of every log line written inside the block."""
    token = log_context.set({**log_context.get(), **fields})
    try:
        yield
    finally:
        log_context.reset(token)


def current_context() -> dict[str, Any]:
    return dict(log_context.get())


def run_in_executor_with_context(
    executor: Executor | None, fn: Callable[..., T], *args: Any
) -> asyncio.Future[T]:
    """Like loop.run_in_executor, but `fn` sees the caller's correlation id and context.

    asyncio.to_thread copies context variables; loop.run_in_executor does not.
    """
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    return loop.run_in_executor(executor, functools.partial(ctx.run, fn, *args))


class ContextFilter(logging.Filter):
    """Stamp each record with the context of the code that logged it.

    Done when the record is handled, in the logging thread, so a formatter
    running later (or elsewhere) still sees the right correlation id.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, _CID_ATTR):
            setattr(record, _CID_ATTR, correlation_id.get())
            setattr(record, _CONTEXT_ATTR, log_context.get())
        return True


def record_fields(record: logging.LogRecord) -> tuple[str | None, dict[str, Any]]:
    """Correlation id and merged, JSON-safe, masked context of a record."""
    cid = getattr(record, _CID_ATTR, None) or correlation_id.get()
    merged = dict(getattr(record, _CONTEXT_ATTR, None) or log_context.get())
    for key, value in vars(record).items():
        if key not in _RECORD_ATTRS and not key.startswith("_"):
            merged[key] = value  # stray `extra=` fields are kept, inside context
    extra = getattr(record, "context", None)
    if isinstance(extra, Mapping):
        merged.update(extra)
    elif extra is not None:
        merged["context"] = extra
    return cid, _masked(to_json_safe(merged))


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    return value


def iso_utc(created: float) -> str:
    """A record time in ISO 8601 UTC with milliseconds: 2026-05-01T08:00:00.123Z."""
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class SentinelJsonFormatter(JsonFormatter):
    """One JSON object per line with the fields of docs/operations/logging-schema.md."""

    def __init__(self) -> None:
        super().__init__(json_ensure_ascii=False)

    def add_fields(
        self,
        log_data: dict[str, Any],
        record: logging.LogRecord,
        message_dict: dict[str, Any],
    ) -> None:
        cid, context = record_fields(record)
        # A dict logged as the message (logger.info({...})) is treated as context.
        context.update(
            _masked(
                to_json_safe(
                    {
                        k: v
                        for k, v in message_dict.items()
                        if k not in ("exc_info", "stack_info")
                    }
                )
            )
        )
        log_data.update(
            timestamp=iso_utc(record.created),
            level=record.levelname,
            logger=record.name,
            message=mask(record.message),
            correlation_id=cid,
            context=context,
        )
        if message_dict.get("exc_info"):
            log_data["exception"] = mask(str(message_dict["exc_info"]))
        if message_dict.get("stack_info"):
            log_data["stack"] = mask(str(message_dict["stack_info"]))


class SentinelTextFormatter(logging.Formatter):
    """Readable lines for development: time, level, logger, message, key=value."""

    def format(self, record: logging.LogRecord) -> str:
        cid, context = record_fields(record)
        parts = [
            iso_utc(record.created),
            f"{record.levelname:<7}",
            f"{record.name}:",
            mask(record.getMessage()),
        ]
        parts += [f"{key}={_text_value(value)}" for key, value in context.items()]
        if cid:
            parts.append(f"correlation_id={cid}")
        line = " ".join(parts)
        if record.exc_info:
            # Text output is for people at a terminal: a traceback reads best as is.
            line += "\n" + mask(self.formatException(record.exc_info))
        return line


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if not text or any(c in text for c in ' "=\n'):
        return json.dumps(text, ensure_ascii=False)
    return text


class _SentinelHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler configure_logging installs (recognised to replace it on a re-run)."""


def choose_format(fmt: str | None, stream: IO[str]) -> str:
    """Option, then SQLSENTINEL_LOG_FORMAT, then text on a terminal, else json."""
    chosen = fmt or os.environ.get(FORMAT_ENV) or ""
    source = "--log-format" if fmt else FORMAT_ENV
    if not chosen:
        return "text" if _isatty(stream) else "json"
    if chosen.lower() not in FORMATS:
        raise ValueError(f"{source} must be one of json, text; got {chosen!r}")
    return chosen.lower()


def choose_level(level: str | None, default: str = "INFO") -> int:
    """Option, then SQLSENTINEL_LOG_LEVEL, then ``default``."""
    chosen = level or os.environ.get(LEVEL_ENV) or default
    source = "--log-level" if level else LEVEL_ENV
    number = logging.getLevelName(chosen.upper())
    if not isinstance(number, int):
        levels = "DEBUG, INFO, WARNING, ERROR, CRITICAL"
        raise ValueError(f"{source} must be one of {levels}; got {chosen!r}")
    return number


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or file-like without a terminal
        return False


def configure_logging(
    fmt: str | None = None,
    level: str | None = None,
    stream: IO[str] | None = None,
    default_level: str = "INFO",
) -> logging.Handler:
    """Send all log records to `stream` (stdout) as JSON or text; return the handler.

    The level is the option, then SQLSENTINEL_LOG_LEVEL, then ``default_level``.
    """
    out = stream if stream is not None else sys.stdout
    chosen = choose_format(fmt, out)
    level_no = choose_level(level, default_level)
    handler = _SentinelHandler(out)
    handler.addFilter(ContextFilter())
    handler.setFormatter(
        SentinelJsonFormatter() if chosen == "json" else SentinelTextFormatter()
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _SentinelHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_no)
    library_level = logging.NOTSET if level_no <= logging.DEBUG else logging.WARNING
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(library_level)
    return handler

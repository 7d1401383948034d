"""The log channel: one line per notification on the ``sqlsentinel.notify`` logger."""

from __future__ import annotations

import logging
from typing import Any

from sqlsentinel.config import LogChannelConfig
from sqlsentinel.masking import mask
from sqlsentinel.notify.base import Channel, Notification
from sqlsentinel.values import display, to_json_safe

logger = logging.getLogger("sqlsentinel.notify")

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class LogChannel(Channel):
    """Writes the notification to the log; the daemon's logging setup decides where."""

    type = "log"

    def __init__(self, key: str, label: str, config: LogChannelConfig) -> None:
        super().__init__(key, label)
        self.config = config
        self.level = _LEVELS[config.level]

    async def send(self, notification: Notification) -> None:
        n = notification
        text = (
            f"{n.title}: status={n.status} value={display(n.actual_value)} "
            f"threshold={display(n.threshold)}"
        )
        if n.error:
            text += f" error={mask(n.error)}"
        logger.log(self.level, text, extra={"context": log_fields(n, self.label)})


def log_fields(n: Notification, channel: str) -> dict[str, Any]:
    """The structured fields of a notification's log line (JSON-safe)."""
    return {
        "channel": channel,
        "kind": n.kind,
        "alert_name": n.alert_name,
        "status": n.status,
        "previous_status": n.previous_status,
        "actual_value": to_json_safe(n.actual_value),
        "threshold": to_json_safe(n.threshold),
        "database": n.database,
        "execution_id": n.execution_id,
        "timestamp": n.timestamp.isoformat(),
        "context": to_json_safe(n.context),
        "labels": dict(n.labels),
        "error": mask(n.error) if n.error else None,
    }

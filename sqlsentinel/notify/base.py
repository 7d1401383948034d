"""What a notification is, and what every channel must do with one."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from sqlsentinel.values import display, to_json_safe

NotificationKind = Literal["firing", "repeat", "resolved", "error"]


@dataclass(frozen=True)
class Notification:
    """One message about one alert execution, the same for every channel.

    ``actual_value``, ``threshold`` and ``context`` hold JSON-safe values
    (see sqlsentinel.values); ``timestamp`` is an aware UTC datetime.
    """

    kind: NotificationKind
    alert_name: str
    status: str  # the alert's state after the execution: ALERT, OK or ERROR
    previous_status: str | None
    execution_id: str
    timestamp: datetime
    database: str
    description: str | None = None
    actual_value: Any = None
    threshold: Any = None
    context: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def title(self) -> str:
        verb = {
            "firing": "is firing",
            "repeat": "is still firing",
            "resolved": "is resolved",
            "error": "failed to run",
        }[self.kind]
        return f"{self.alert_name} {verb}"

    def template_fields(self) -> dict[str, str]:
        """The values a ``{field}`` template in the config may use, rendered for people."""
        return {
            "alert_name": self.alert_name,
            "description": self.description or "",
            "status": self.status,
            "previous_status": self.previous_status or "",
            "kind": self.kind,
            "actual_value": display(self.actual_value),
            "threshold": display(self.threshold),
            "execution_id": self.execution_id,
            "timestamp": self.timestamp.isoformat(),
            "database": self.database,
            "error": self.error or "",
        }

    def render(self, template: str) -> str:
        """Fill a template checked by config.check_template."""
        return template.format_map(self.template_fields())

    def to_payload(self) -> dict[str, Any]:
        """The documented JSON body of webhook notifications (docs/notifications.md)."""
        return {
            "version": 1,
            "kind": self.kind,
            "alert": {
                "name": self.alert_name,
                "description": self.description,
                "database": self.database,
                "labels": dict(self.labels),
            },
            "status": self.status,
            "previous_status": self.previous_status,
            "actual_value": to_json_safe(self.actual_value),
            "threshold": to_json_safe(self.threshold),
            "context": to_json_safe(self.context),
            "error": self.error,
            "execution_id": self.execution_id,
            "timestamp": self.timestamp.isoformat(),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Notification:
        """Rebuild a notification stored in the outbox (the inverse of to_payload)."""
        alert = payload["alert"]
        return cls(
            kind=payload["kind"],
            alert_name=alert["name"],
            description=alert.get("description"),
            database=alert.get("database", ""),
            labels=alert.get("labels") or {},
            status=payload["status"],
            previous_status=payload.get("previous_status"),
            actual_value=payload.get("actual_value"),
            threshold=payload.get("threshold"),
            context=payload.get("context") or {},
            error=payload.get("error"),
            execution_id=payload["execution_id"],
            timestamp=datetime.fromisoformat(payload["timestamp"]),
        )


@dataclass(frozen=True)
class ChannelCheck:
    """A passive health check of a channel: configuration and reachability, no message."""

    status: Literal["healthy", "degraded", "unhealthy"]
    message: str


class Channel(abc.ABC):
    """Delivers notifications to one destination.

    ``send`` either returns (delivered) or raises DeliveryError, with ``retryable``
    and ``retry_after`` set as the receiver allows. Every network call has a timeout.
    Implementations never log or raise secrets (webhook URLs, passwords).
    """

    type: ClassVar[str]

    def __init__(self, key: str, label: str) -> None:
        self.key = key  # stable identity of the destination, stored with deliveries
        self.label = label  # metrics label: configured name or channel type

    @abc.abstractmethod
    async def send(self, notification: Notification) -> None:
        """Deliver one notification or raise DeliveryError."""

    async def check(self) -> ChannelCheck:
        """Check configuration and reachability without sending a message."""
        return ChannelCheck("healthy", "configured")

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most channels hold nothing
        """Release connections held by the channel."""

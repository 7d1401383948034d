"""HTTP checks of a running SQL Sentinel: /health schema, /metrics families."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

HEALTH_STATUSES = ("healthy", "degraded", "unhealthy")
COMPONENTS = ("database", "scheduler", "notifications")
EXPECTED_METRICS = (
    "sqlsentinel_alerts_total",
    "sqlsentinel_alert_duration_seconds",
    "sqlsentinel_notifications_total",
    "sqlsentinel_scheduler_jobs",
    "sqlsentinel_uptime_seconds",
    "sqlsentinel_build_info",
)
ALERTS_METRIC = "sqlsentinel_alerts_total"
_REASON_KEYS = ("reason", "message", "detail", "error", "output")
_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Answer:
    """One HTTP exchange: status code, body, latency; ``error`` when none came back."""

    url: str
    status_code: int | None
    text: str
    seconds: float
    error: str | None = None

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        import json

        try:
            return json.loads(self.text)
        except ValueError:
            return None


def fetch(client: httpx.Client, url: str) -> Answer:
    """GET ``url``; connection problems become an Answer with ``error`` set."""
    import httpx

    started = time.perf_counter()
    try:
        response = client.get(url, headers={"Accept": "application/json, text/plain"})
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        return Answer(url, None, "", time.perf_counter() - started, reason)
    return Answer(
        url, response.status_code, response.text, time.perf_counter() - started
    )


def health_problems(document: Any, status_code: int | None) -> list[str]:
    """Every way a /health answer departs from the documented schema."""
    if not isinstance(document, dict):
        return ["the body is not a JSON object"]
    problems = []
    status = document.get("status")
    if status not in HEALTH_STATUSES:
        problems.append(
            f"status is {status!r}, expected one of {', '.join(HEALTH_STATUSES)}"
        )
    if not _is_timestamp(document.get("timestamp")):
        problems.append("timestamp is missing or not an ISO 8601 time")
    if not isinstance(document.get("version"), str):
        problems.append("version is missing or not a string")
    uptime = document.get("uptime_seconds")
    if isinstance(uptime, bool) or not isinstance(uptime, int | float) or uptime < 0:
        problems.append("uptime_seconds is missing or not a non-negative number")
    checks = document.get("checks")
    if not isinstance(checks, dict):
        return [*problems, "checks is missing or not an object"]
    for name in COMPONENTS:
        if component_status(checks.get(name)) is None:
            problems.append(f"checks.{name} is missing or has no status")
    expected_code = 503 if status == "unhealthy" else 200
    if status in HEALTH_STATUSES and status_code != expected_code:
        problems.append(
            f"HTTP status {status_code} for {status}, expected {expected_code}"
        )
    return problems


def component_status(component: Any) -> str | None:
    """The status string of one component check."""
    if isinstance(component, dict) and isinstance(component.get("status"), str):
        return str(component["status"])
    return None


def component_reason(component: Any) -> str:
    """Why a component has its status: its own message, else its failing parts'."""
    if not isinstance(component, dict):
        return ""
    for key in _REASON_KEYS:
        if component.get(key):
            return str(component[key])
    return "; ".join(_failing_parts(component, ""))


def _failing_parts(section: dict[str, Any], prefix: str) -> list[str]:
    """``name: message`` for each nested check that is not healthy."""
    parts = []
    for name, value in section.items():
        if not isinstance(value, dict):
            continue
        if component_status(value) not in (None, "healthy"):
            parts.append(
                f"{prefix}{name}: {component_reason(value) or value['status']}"
            )
        elif component_status(value) is None:
            parts.extend(_failing_parts(value, f"{prefix}{name}."))
    return parts


def _is_timestamp(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def metric_names(text: str) -> dict[str, float]:
    """Parse an exposition; each metric and sample name with the sum of its values.

    Raises ValueError when the text does not parse.
    """
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        names = {family.name}
        if family.type == "counter":
            # The parser strips _total from counter families; people know the full name.
            names.add(f"{family.name}_total")
        for name in names:
            sums.setdefault(name, 0.0)
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


def missing_metrics(
    names: dict[str, float], expected: tuple[str, ...] = EXPECTED_METRICS
) -> list[str]:
    """The expected metric names absent from a parsed exposition."""
    return [name for name in expected if name not in names]


def wait_healthy(
    client: httpx.Client,
    base_url: str,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
) -> float:
    """Poll /health until it answers ``healthy``; seconds waited.

    Raises TimeoutError after ``timeout`` and RuntimeError when ``alive()`` turns false.
    """
    started = time.perf_counter()
    while True:
        answer = fetch(client, f"{base_url}/health")
        document = answer.json()
        if isinstance(document, dict) and document.get("status") == "healthy":
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise TimeoutError(_last_state(answer, document))
        if not alive():
            raise RuntimeError("the container exited before it became healthy")
        time.sleep(_POLL_SECONDS)


def _last_state(answer: Answer, document: Any) -> str:
    if answer.error:
        return answer.error
    if isinstance(document, dict):
        return f"last status {document.get('status')!r} (HTTP {answer.status_code})"
    return f"HTTP {answer.status_code}, body not JSON"


def wait_for_alert(client: httpx.Client, base_url: str, timeout: float) -> float:
    """Poll /metrics until at least one alert execution is counted; the count seen."""
    deadline = time.perf_counter() + timeout
    while True:
        answer = fetch(client, f"{base_url}/metrics")
        try:
            count = (
                metric_names(answer.text).get(ALERTS_METRIC, 0.0)
                if answer.text
                else 0.0
            )
        except ValueError:
            count = 0.0
        if count >= 1:
            return count
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{ALERTS_METRIC} stayed at {count:g}")
        time.sleep(_POLL_SECONDS * 4)

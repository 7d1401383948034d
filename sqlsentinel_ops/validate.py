"""`validate`: check any running SQL Sentinel through its HTTP endpoints."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sqlsentinel_ops.probes import (
    COMPONENTS,
    Answer,
    component_reason,
    component_status,
    fetch,
    health_problems,
    metric_names,
    missing_metrics,
)

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class Check:
    """One line of a validation: PASS (True), FAIL (False) or WARN (None)."""

    name: str
    ok: bool | None
    detail: str = ""
    latency_ms: float | None = None


@dataclass
class Validation:
    """Everything `validate` found at one URL."""

    url: str
    status: str | None = None
    version: str | None = None
    components: dict[str, dict[str, str]] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No failed check."""
        return all(check.ok is not False for check in self.checks)

    def as_json(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "url": self.url,
            "status": self.status,
            "version": self.version,
            "components": self.components,
            "checks": [asdict(check) for check in self.checks],
        }


def validate(client: httpx.Client, base_url: str) -> Validation:
    """Check /health, each component, /health/live, /health/ready and /metrics."""
    result = Validation(base_url)
    answer = fetch(client, f"{base_url}/health")
    if answer.error is not None:
        result.checks.append(Check("/health answers", False, answer.error))
        return result
    document = answer.json()
    result.checks.append(schema_check(answer))
    if isinstance(document, dict):
        _read_health(result, document)
    for path in ("/health/live", "/health/ready"):
        probe = fetch(client, f"{base_url}{path}")
        shown = probe.error or f"HTTP {probe.status_code}"
        result.checks.append(
            Check(path, probe.status_code == 200, shown, _ms(probe.seconds))
        )
    result.checks.append(metrics_check(client, base_url))
    return result


def _read_health(result: Validation, document: dict[str, Any]) -> None:
    """Record the overall status and one check per component."""
    result.status = (
        document.get("status") if isinstance(document.get("status"), str) else None
    )
    result.version = str(document.get("version")) if document.get("version") else None
    result.checks.append(
        Check("overall status", _verdict(result.status), str(result.status))
    )
    found = document.get("checks")
    checks: dict[str, Any] = found if isinstance(found, dict) else {}
    for name in [*COMPONENTS, *(k for k in checks if k not in COMPONENTS)]:
        status = component_status(checks.get(name))
        reason = component_reason(checks.get(name))
        result.components[name] = {"status": str(status), "reason": reason}
        shown = f"{status}: {reason}" if reason else str(status)
        result.checks.append(Check(f"component {name}", _verdict(status), shown))


def _verdict(status: str | None) -> bool | None:
    """healthy passes, degraded warns, anything else fails."""
    return {"healthy": True, "degraded": None}.get(status or "", False)


def schema_check(answer: Answer) -> Check:
    """The /health answer follows the documented schema."""
    problems = health_problems(answer.json(), answer.status_code)
    detail = "; ".join(problems) or f"HTTP {answer.status_code}"
    return Check("/health schema", not problems, detail, _ms(answer.seconds))


def metrics_check(client: httpx.Client, base_url: str) -> Check:
    """/metrics parses and holds the expected families."""
    answer = fetch(client, f"{base_url}/metrics")
    if answer.error is not None or answer.status_code != 200:
        return Check("/metrics", False, answer.error or f"HTTP {answer.status_code}")
    try:
        names = metric_names(answer.text)
    except ValueError as exc:
        return Check("/metrics parses", False, str(exc), _ms(answer.seconds))
    missing = missing_metrics(names)
    detail = f"missing: {', '.join(missing)}" if missing else f"{len(names)} names"
    return Check("/metrics families", not missing, detail, _ms(answer.seconds))


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)

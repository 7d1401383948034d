"""`test`: run the image on the example config and check it end to end."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sqlsentinel_ops.containers import Running
from sqlsentinel_ops.probes import fetch, wait_for_alert, wait_healthy
from sqlsentinel_ops.units import format_seconds
from sqlsentinel_ops.validate import Check, metrics_check, schema_check

if TYPE_CHECKING:
    import httpx

    from sqlsentinel_ops.output import Reporter


class StepFailed(Exception):
    """Raised by a step to fail with a reason."""


@dataclass(frozen=True)
class Step:
    """The outcome of one test step."""

    name: str
    ok: bool
    detail: str
    seconds: float


@dataclass
class SmokeTest:
    """The steps of `sentinel-ops test` against one started container."""

    running: Running
    client: httpx.Client
    reporter: Reporter
    timeout: float
    grace: float
    healthcheck: tuple[str, ...]
    steps: list[Step] = field(default_factory=list)

    def run(self) -> bool:
        """Run every step in order, stopping at the first failure."""
        plan: list[tuple[str, Callable[[], str]]] = [
            ("container starts", self.start),
            ("/health answers healthy", self.healthy),
            ("/health matches the schema", self.health_schema),
            ("/metrics holds the expected families", self.metrics),
            ("an alert executed", self.alert_executed),
            ("image HEALTHCHECK command passes", self.image_healthcheck),
            ("SIGTERM stops it with exit code 0", self.sigterm),
        ]
        # all() stops at the first failed step: later steps depend on earlier ones.
        return all(self.step(name, action) for name, action in plan)

    def step(self, name: str, action: Callable[[], str]) -> bool:
        """Run one step, record and print its outcome."""
        started = time.perf_counter()
        try:
            detail, ok = action(), True
        except (StepFailed, TimeoutError, RuntimeError) as exc:
            detail, ok = str(exc), False
        outcome = Step(name, ok, detail, time.perf_counter() - started)
        self.steps.append(outcome)
        self.reporter.check(name, ok, f"{detail} ({format_seconds(outcome.seconds)})")
        return ok

    def start(self) -> str:
        self.running.start()
        return self.running.base_url

    def healthy(self) -> str:
        wait_healthy(
            self.client, self.running.base_url, self.timeout, self.running.alive
        )
        since_start = time.perf_counter() - self.running.started_at
        return f"{format_seconds(since_start)} after start"

    def health_schema(self) -> str:
        return _passed(
            schema_check(fetch(self.client, f"{self.running.base_url}/health"))
        )

    def metrics(self) -> str:
        return _passed(metrics_check(self.client, self.running.base_url))

    def alert_executed(self) -> str:
        count = wait_for_alert(self.client, self.running.base_url, self.timeout)
        return f"sqlsentinel_alerts_total = {count:g}"

    def image_healthcheck(self) -> str:
        command = _healthcheck_command(self.healthcheck)
        if not command:
            raise StepFailed("the image declares no HEALTHCHECK")
        code, output = self.running.container.exec(command)
        if code != 0:
            raise StepFailed(f"exit code {code}: {output.strip()[-200:]}")
        return " ".join(command)

    def sigterm(self) -> str:
        self.running.container.signal("SIGTERM")
        code = self.running.container.wait(self.grace)
        if code is None:
            raise StepFailed(
                f"still running {format_seconds(self.grace)} after SIGTERM"
            )
        if code != 0:
            raise StepFailed(f"exit code {code}")
        return "exit code 0"

    def as_json(self) -> list[dict[str, Any]]:
        """The steps in JSON form."""
        return [{**asdict(s), "seconds": round(s.seconds, 3)} for s in self.steps]


def _passed(check: Check) -> str:
    """A validate check as a step outcome: its detail, or StepFailed."""
    if not check.ok:
        raise StepFailed(check.detail)
    return check.detail


def _healthcheck_command(test: tuple[str, ...]) -> list[str]:
    """The command of a HEALTHCHECK test array, ready for exec."""
    if not test or test[0] == "NONE":
        return []
    if test[0] == "CMD":
        return list(test[1:])
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", test[1]]
    return list(test)

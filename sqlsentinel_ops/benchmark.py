"""`benchmark`: cold starts timed to the first healthy /health answer, and memory."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlsentinel_ops.errors import UsageProblem
from sqlsentinel_ops.units import format_bytes


@dataclass(frozen=True)
class Run:
    """One cold start: seconds from start to healthy, and memory once healthy."""

    startup_seconds: float
    memory_bytes: int


def summarize(values: list[float]) -> dict[str, float]:
    """min, median, p95 (linear interpolation) and max."""
    ordered = sorted(values)
    if len(ordered) == 1:
        p95 = ordered[0]
    else:
        p95 = statistics.quantiles(ordered, n=20, method="inclusive")[18]
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": p95,
        "max": ordered[-1],
    }


def record(
    image: str, image_id: str, runs: list[Run], budgets: dict[str, float | None]
) -> dict[str, Any]:
    """The benchmark result: one JSON object, also the history file's line format."""
    startup = summarize([r.startup_seconds for r in runs])
    memory = summarize([float(r.memory_bytes) for r in runs])
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "image": image,
        "image_id": image_id,
        "runs": len(runs),
        "startup_seconds": {k: round(v, 4) for k, v in startup.items()},
        "memory_bytes": {k: int(v) for k, v in memory.items()},
        "samples": [
            {
                "startup_seconds": round(r.startup_seconds, 4),
                "memory_bytes": r.memory_bytes,
            }
            for r in runs
        ],
        "budgets": budgets,
    }


def budget_failures(result: dict[str, Any]) -> list[str]:
    """Which budgets a result exceeds (startup p95, memory max)."""
    failures = []
    max_startup = result["budgets"].get("max_startup_seconds")
    p95 = result["startup_seconds"]["p95"]
    if max_startup is not None and p95 > max_startup:
        failures.append(f"startup p95 {p95:.2f} s exceeds {max_startup:g} s")
    max_memory = result["budgets"].get("max_memory_bytes")
    peak = result["memory_bytes"]["max"]
    if max_memory is not None and peak > max_memory:
        failures.append(f"memory {_over(peak, max_memory)}")
    return failures


def _over(peak: float, budget: float) -> str:
    """``peak exceeds budget`` in MB; exact bytes when MB would show them equal."""
    shown, limit = format_bytes(peak), format_bytes(budget)
    if shown == limit:
        shown, limit = f"{shown} ({int(peak)} B)", f"{limit} ({int(budget)} B)"
    return f"{shown} exceeds {limit}"


def last_record(history: Path) -> dict[str, Any] | None:
    """The last result in a JSON-lines history file, None when there is none."""
    try:
        lines = history.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageProblem(f"{history}: cannot be read ({exc.strerror})") from None
    for number, line in reversed(list(enumerate(lines, start=1))):
        if line.strip():
            try:
                found = json.loads(line)
            except ValueError:
                raise UsageProblem(f"{history}: line {number} is not JSON") from None
            if isinstance(found, dict) and "startup_seconds" in found:
                return found
            raise UsageProblem(f"{history}: line {number} is not a benchmark result")
    return None


def append_record(history: Path, result: dict[str, Any]) -> None:
    """Append one result as a JSON line."""
    try:
        history.parent.mkdir(parents=True, exist_ok=True)
        with history.open("a", encoding="utf-8") as out:
            out.write(json.dumps(result, sort_keys=True) + "\n")
    except OSError as exc:
        raise UsageProblem(f"{history}: cannot be written ({exc.strerror})") from None


def deltas(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, float]:
    """Change since the previous result: startup median and p95, memory median."""
    return {
        "startup_median_seconds": round(
            current["startup_seconds"]["median"]
            - previous["startup_seconds"]["median"],
            4,
        ),
        "startup_p95_seconds": round(
            current["startup_seconds"]["p95"] - previous["startup_seconds"]["p95"], 4
        ),
        "memory_median_bytes": int(
            current["memory_bytes"]["median"] - previous["memory_bytes"]["median"]
        ),
    }

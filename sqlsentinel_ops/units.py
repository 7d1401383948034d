"""Sizes and durations as operators write them: 300MB, 1.5GiB, 5s, 800ms."""

from __future__ import annotations

import re

from sqlsentinel_ops.errors import UsageProblem

# Decimal units, as `docker image ls` shows them; binary ones for those who want them.
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SECOND_UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0}
_NUMBER_UNIT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(text: str, option: str = "size") -> int:
    """Parse ``300MB``, ``1.5GiB`` or ``1048576`` into bytes."""
    number, unit = _split(text, option)
    factor = _SIZE_UNITS.get(unit.lower())
    if factor is None:
        known = "B, kB, MB, GB, KiB, MiB, GiB"
        raise UsageProblem(
            f"{option}: unknown size unit {unit!r} in {text!r} ({known})"
        )
    return int(number * factor)


def parse_seconds(text: str, option: str = "duration") -> float:
    """Parse ``5s``, ``800ms``, ``2m`` or ``5`` into seconds."""
    number, unit = _split(text, option)
    factor = _SECOND_UNITS.get(unit.lower())
    if factor is None:
        raise UsageProblem(f"{option}: unknown unit {unit!r} in {text!r} (ms, s, m)")
    if number <= 0:
        raise UsageProblem(f"{option}: {text!r} must be greater than zero")
    return number * factor


def _split(text: str, option: str) -> tuple[float, str]:
    match = _NUMBER_UNIT.fullmatch(text)
    if match is None:
        raise UsageProblem(f"{option}: {text!r} is not a number with a unit")
    return float(match.group(1)), match.group(2)


def format_bytes(size: float) -> str:
    """Show a byte count in decimal units, as `docker image ls` does."""
    for unit in ("B", "kB", "MB"):
        if abs(size) < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.2f} GB"


def format_seconds(seconds: float) -> str:
    """Show a duration in ms below one second and in seconds above."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"

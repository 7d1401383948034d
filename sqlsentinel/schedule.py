"""When alerts run: crontab(5) expressions in a time zone, and fixed intervals.

Cron fields are matched on the wall clock of the alert's time zone and then mapped
to real instants:
- a wall-clock time skipped by a daylight-saving jump (02:30 on a spring-forward
  night) runs at the same distance after the jump (03:30), so daily jobs never
  skip a day;
- a wall-clock time that happens twice (01:30 on a fall-back night) runs once, at
  its first occurrence, except for jobs whose hour field holds ``*``: those run in
  both copies of the repeated hour, as cron does, so an hourly job never goes
  two real hours without a run;
- the next run is always strictly later than the previous one, so nothing loops.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# Far enough to find any expression that fires at all (29 February of a leap
# year on a given weekday needs up to 28 years).
_SEARCH_YEARS = 30
_SLACK = timedelta(hours=2)
# crontab(5) syntax only: no Quartz or Jenkins extensions (L, W, #, ?, H).
_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_MONTH_ORDER = (
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "oct",
    "nov",
    "dec",
)
_DAY_ORDER = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTHS = frozenset(_MONTH_ORDER)
_DAYS = frozenset(_DAY_ORDER)
_NAMES: tuple[frozenset[str], ...] = (
    frozenset(),
    frozenset(),
    frozenset(),
    _MONTHS,
    _DAYS,
)
_PART = re.compile(r"(\*|[0-9a-z]+)(?:-([0-9a-z]+))?(/[0-9]+)?")


def _part_ok(part: str, names: frozenset[str]) -> bool:
    """One comma-separated item of a field: `*`, n, a-b (a <= b), with an optional /step."""
    match = _PART.fullmatch(part)
    if match is None:
        return False
    start, end, step = match.groups()
    if start == "*":
        return end is None
    if end is None and step is not None:
        return False  # a step needs a range: `*/n` or `a-b/n`
    bounds = [_value(w, names) for w in (start, end) if w is not None]
    if any(b is None for b in bounds):
        return False
    return len(bounds) == 1 or bounds[0] <= bounds[1]  # type: ignore[operator]


def _value(word: str, names: frozenset[str]) -> int | None:
    """A number, or a month or day name as cron numbers it (jan=1, sun=0)."""
    if word.isdigit():
        return int(word)
    if word in _MONTHS and names is _MONTHS:
        return _MONTH_ORDER.index(word) + 1
    if word in _DAYS and names is _DAYS:
        return _DAY_ORDER.index(word)
    return None


def normalize_cron(expression: str) -> str:
    text = " ".join(expression.split())
    return _MACROS.get(text.lower(), text)


@lru_cache(maxsize=1024)
def check_cron(expression: str) -> None:
    """Raise ValueError unless ``expression`` is a five-field cron expression that fires."""
    text = normalize_cron(expression)
    if len(text.split()) != 5:
        raise ValueError(
            f"{expression!r} is not a cron expression: expected 5 fields "
            "(minute hour day-of-month month day-of-week) or a macro such as @daily"
        )
    for field, names, value in zip(_FIELDS, _NAMES, text.lower().split(), strict=True):
        for part in value.split(","):
            if not _part_ok(part, names):
                raise ValueError(
                    f"{expression!r} is not a crontab(5) expression: {part!r} in the "
                    f"{field} field (use numbers, ranges a-b with a <= b, lists a,b, "
                    "steps */n or a-b/n" + (", or names" if names else "") + ")"
                )
    try:
        it = croniter(
            text, datetime(2000, 1, 1), max_years_between_matches=_SEARCH_YEARS
        )
        it.get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"{expression!r} never fires (no such date)") from None
    except (CroniterBadCronError, CroniterError, ValueError, KeyError) as exc:
        raise ValueError(
            f"{expression!r} is not a valid cron expression: {exc}"
        ) from None


@lru_cache(maxsize=512)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


@dataclass(frozen=True)
class CronSchedule:
    """A crontab(5) expression evaluated on the wall clock of ``tz``."""

    expression: str
    tz: str = "UTC"

    def next_after(self, after: datetime) -> datetime:
        """The first run strictly after the aware instant ``after``, as an aware UTC datetime."""
        zone = _zone(self.tz)
        text = normalize_cron(self.expression)
        every_hour = "*" in text.split()[1]
        # Wall-clock order and real order differ only within a DST shift (< 2 h), so
        # start the walk a little early and stop once candidates are 2 h past the best.
        start = after.astimezone(zone).replace(tzinfo=None) - _SLACK
        it = croniter(text, start, max_years_between_matches=_SEARCH_YEARS)
        best: datetime | None = None
        for _ in range(10_000):
            naive: datetime = it.get_next(datetime)
            if (
                best is not None
                and naive > best.astimezone(zone).replace(tzinfo=None) + _SLACK
            ):
                return best
            for instant in self._instants(naive, zone, every_hour):
                if instant > after and (best is None or instant < best):
                    best = instant
        raise RuntimeError(
            f"no run found after {after.isoformat()} for {self.expression!r}"
        )

    @staticmethod
    def _instants(
        naive: datetime, zone: zoneinfo.ZoneInfo, every_hour: bool
    ) -> list[datetime]:
        first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
        second = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
        if second == first or not every_hour:
            # A gap time maps (fold=0) to the same distance after the jump; a repeated
            # time runs once, at its first occurrence, unless the job runs every hour.
            return [first]
        return [first, second]


@dataclass(frozen=True)
class IntervalSchedule:
    """Every ``seconds`` seconds, aligned on the Unix epoch so restarts keep the rhythm."""

    seconds: float

    def next_after(self, after: datetime) -> datetime:
        ts = after.timestamp()
        step = self.seconds
        next_ts = (int(ts // step) + 1) * step
        if next_ts <= ts:
            next_ts += step
        return datetime.fromtimestamp(next_ts, UTC)


Schedule = CronSchedule | IntervalSchedule


def schedule_for(schedule: str | None, interval: float | None, tz: str) -> Schedule:
    if schedule is not None:
        return CronSchedule(schedule, tz)
    assert interval is not None
    return IntervalSchedule(interval)

"""Schedules: crontab(5) semantics, time zones and daylight saving, intervals, the scheduler."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from sqlsentinel.config import Alert
from sqlsentinel.daemon import Scheduler
from sqlsentinel.schedule import CronSchedule, IntervalSchedule, check_cron

UTC = UTC
NY = ZoneInfo("America/New_York")


def runs(expr: str, tz: str, start: datetime, count: int) -> list[str]:
    sched, out, t = CronSchedule(expr, tz), [], start
    for _ in range(count):
        t = sched.next_after(t)
        out.append(t.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M%z"))
    return out


class TestCrontabSemantics:
    @pytest.mark.parametrize("dow", ["0", "7", "sun", "SUN"])
    def test_sunday_spellings_agree(self, dow):
        """0 and 7 are Sunday; names and numbers agree (2026-12-06 is a Sunday)."""
        assert runs(f"0 9 * * {dow}", "UTC", datetime(2026, 12, 4, tzinfo=UTC), 1) == [
            "2026-12-06 09:00+0000"
        ]

    def test_day_of_month_or_day_of_week(self):
        """When both day fields are restricted, either one matching is enough (crontab(5))."""
        got = runs("0 0 1 * mon", "UTC", datetime(2026, 11, 29, tzinfo=UTC), 3)

        assert got == [
            "2026-11-30 00:00+0000",
            "2026-12-01 00:00+0000",
            "2026-12-07 00:00+0000",
        ]

    @pytest.mark.parametrize(
        "expr",
        [
            "61 * * * *",
            "0 9 * * * *",
            "* * *",
            "0 0 31 2 *",
            "@sometimes",
            # Quartz and Jenkins extensions are not crontab(5).
            "0 0 L * *",
            "0 0 15W * *",
            "0 0 * * 1#2",
            "0 0 ? * *",
            "H * * * *",
            "0 0 * jan-foo *",
            # Backward ranges and steps on a single value are not crontab(5) either.
            "0 0 5-1 * *",
            "0 0 * * 7-1",
            "0 0 * * mon/2",
            "5/15 * * * *",
            "0 0 * dec-jan *",
        ],
    )
    def test_rejected(self, expr):
        with pytest.raises(
            ValueError, match=r"cron expression|crontab\(5\) expression|never fires"
        ):
            check_cron(expr)


class TestDaylightSaving:
    def test_daily_job_in_the_spring_gap_still_runs(self):
        """02:30 does not exist on 2026-03-08 in New York: the run moves to 03:30, no day skipped."""
        got = runs(
            "30 2 * * *", "America/New_York", datetime(2026, 3, 7, 12, tzinfo=UTC), 3
        )

        assert got == [
            "2026-03-08 03:30-0400",
            "2026-03-09 02:30-0400",
            "2026-03-10 02:30-0400",
        ]

    def test_daily_job_in_the_repeated_hour_runs_once(self):
        got = runs(
            "30 1 * * *", "America/New_York", datetime(2026, 10, 31, 12, tzinfo=UTC), 3
        )

        assert got == [
            "2026-11-01 01:30-0400",
            "2026-11-02 01:30-0500",
            "2026-11-03 01:30-0500",
        ]

    def test_hourly_job_runs_in_both_copies_of_the_repeated_hour(self):
        got = runs(
            "0 * * * *", "America/New_York", datetime(2026, 11, 1, 4, 30, tzinfo=UTC), 4
        )

        assert got == [
            "2026-11-01 01:00-0400",
            "2026-11-01 01:00-0500",
            "2026-11-01 02:00-0500",
            "2026-11-01 03:00-0500",
        ]

    @pytest.mark.parametrize(
        "start", [datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 10, 23, tzinfo=UTC)]
    )
    def test_runs_are_strictly_increasing_across_dst_changes(self, start):
        sched, t = CronSchedule("*/20 * * * *", "Europe/London"), start
        previous = t
        for _ in range(3 * 24 * 5):  # five days around the change
            t = sched.next_after(t)
            assert t > previous
            previous = t


def test_interval_is_aligned_and_strictly_later():
    sched = IntervalSchedule(15)

    assert sched.next_after(datetime(2026, 1, 1, 0, 0, 14, tzinfo=UTC)) == datetime(
        2026, 1, 1, 0, 0, 15, tzinfo=UTC
    )
    assert sched.next_after(datetime(2026, 1, 1, 0, 0, 15, tzinfo=UTC)) == datetime(
        2026, 1, 1, 0, 0, 30, tzinfo=UTC
    )


def make_alert(
    name: str,
    schedule: str | None = "*/5 * * * *",
    interval: float | None = None,
    enabled: bool = True,
) -> Alert:
    return Alert(
        name=name,
        description=None,
        enabled=enabled,
        schedule=schedule,
        interval=interval,
        query="SELECT 'OK' AS status",
        database="default",
        timezone="UTC",
        timeout=10,
        repeat_interval=None,
        notify_on_recovery=True,
        notify_on_error=True,
        notify=(),
        labels={},
    )


class TestScheduler:
    def test_due_alerts_at_their_time_only(self):
        sched = Scheduler()
        sched.set_alerts(
            [make_alert("a"), make_alert("off", enabled=False)],
            datetime(2026, 1, 1, 0, 1, tzinfo=UTC),
        )

        assert sched.due(datetime(2026, 1, 1, 0, 4, 59, tzinfo=UTC)) == []
        assert sched.due(datetime(2026, 1, 1, 0, 5, tzinfo=UTC)) == [
            ("a", datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
        ]
        assert sched.due(datetime(2026, 1, 1, 0, 5, 30, tzinfo=UTC)) == []
        assert sched.jobs_count == 1

    def test_missed_runs_are_not_replayed(self):
        """After a long pause only one run happens, then the next one after now."""
        sched = Scheduler()
        sched.set_alerts([make_alert("a")], datetime(2026, 1, 1, 0, 1, tzinfo=UTC))

        due = sched.due(datetime(2026, 1, 1, 3, 2, tzinfo=UTC))

        assert due == [("a", datetime(2026, 1, 1, 0, 5, tzinfo=UTC))]
        assert sched.next_wakeup() == datetime(2026, 1, 1, 3, 5, tzinfo=UTC)

    def test_reload_keeps_next_run_of_unchanged_alerts(self):
        sched = Scheduler()
        sched.set_alerts(
            [make_alert("a"), make_alert("b")], datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
        )

        sched.set_alerts(
            [
                make_alert("a"),
                make_alert("b", schedule="0 * * * *"),
                make_alert("c", interval=60, schedule=None),
            ],
            datetime(2026, 1, 1, 0, 3, tzinfo=UTC),
        )

        assert sched.next_runs == {
            "a": datetime(2026, 1, 1, 0, 5, tzinfo=UTC),
            "b": datetime(2026, 1, 1, 1, 0, tzinfo=UTC),
            "c": datetime(2026, 1, 1, 0, 4, tzinfo=UTC),
        }

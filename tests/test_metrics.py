"""The daemon's Prometheus metrics: names, labels, lifecycle of series, exposition."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import (
    generate_latest as generate_openmetrics,
)
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from sqlsentinel.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "api" / "metrics.md"
RULES = ROOT / "compose" / "prometheus" / "rules" / "sqlsentinel.yml"
PROMTOOL_MISSING = (
    "promtool not found: install it with "
    "`apt-get install -y --no-install-recommends prometheus`"
)
ODD_NAMES = ['orders "late" \\ west', "line\nbreak", "café ✓ 注文", "plain"]


def promtool() -> str:
    """Path of promtool, or skip the test saying how to install it."""
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(PROMTOOL_MISSING)
    return path


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every exported sample, parsed back from the text exposition."""
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def val(metrics: Metrics, short_name: str, **labels: str) -> float | None:
    """The value of sqlsentinel_<short_name>{labels}, None when not exported."""
    key = ("sqlsentinel_" + short_name, frozenset(labels.items()))
    return samples(metrics).get(key)


def exported_names(text: str) -> set[str]:
    return set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))


def filled(**kwargs: object) -> Metrics:
    """A Metrics with one series of every kind set."""
    metrics = Metrics(version="1.2.3", revision="abc123", **kwargs)  # type: ignore[arg-type]
    metrics.set_alerts(ODD_NAMES)
    metrics.set_channels(["ops-slack", "pager"])
    metrics.execution_finished("plain", "alert", "ALERT", 2.5, 1_700_000_000.0, True)
    metrics.execution_skipped("plain")
    metrics.notification_delivered("ops-slack", False, 0.3)
    metrics.set_owed({"ops-slack": 2})
    metrics.set_scheduler_jobs(4)
    metrics.config_reloaded(True, at=1_700_000_100.0)
    return metrics


class TestSeriesLifecycle:
    def test_configured_alerts_have_zero_series_before_their_first_run(self) -> None:
        metrics = Metrics(version="1")
        metrics.set_alerts(["a"])

        assert val(metrics, "alerts_total", alert_name="a", status="error") == 0
        assert val(metrics, "alert_state", alert_name="a", state="ok") == 0
        assert val(metrics, "executions_skipped_total", alert_name="a") == 0
        assert val(metrics, "alert_duration_seconds_count", alert_name="a") == 0
        assert val(metrics, "alert_last_run_timestamp_seconds", alert_name="a") is None

    def test_finished_execution_updates_counter_histogram_timestamps_and_state(
        self,
    ) -> None:
        metrics = Metrics(version="1")
        metrics.set_alerts(["a"])

        metrics.execution_finished("a", "alert", "ALERT", 42.0, 1000.0, True)
        metrics.execution_finished("a", "error", "ERROR", 0.2, 2000.0, False)

        assert val(metrics, "alerts_total", alert_name="a", status="alert") == 1
        assert val(metrics, "alerts_total", alert_name="a", status="error") == 1
        assert val(metrics, "alert_duration_seconds_sum", alert_name="a") == 42.2
        assert (
            val(metrics, "alert_duration_seconds_bucket", alert_name="a", le="60.0")
            == 2
        )
        assert val(metrics, "alert_last_run_timestamp_seconds", alert_name="a") == 2000
        assert (
            val(metrics, "alert_last_success_timestamp_seconds", alert_name="a") == 1000
        )
        states = {
            s: val(metrics, "alert_state", alert_name="a", state=s)
            for s in ("ok", "alert", "error")
        }
        assert states == {"ok": 0, "alert": 0, "error": 1}

    def test_duration_buckets_reach_thirty_minutes(self) -> None:
        metrics = Metrics(version="1")
        metrics.set_alerts(["slow"])

        metrics.execution_finished("slow", "ok", "OK", 1500.0, 1.0, True)

        bucket = "alert_duration_seconds_bucket"
        below = val(metrics, bucket, alert_name="slow", le="600.0")
        within = val(metrics, bucket, alert_name="slow", le="1800.0")
        assert (below, within) == (0, 1)

    def test_removed_alert_disappears_from_the_output(self) -> None:
        metrics = Metrics(version="1")
        metrics.set_alerts(["kept", "gone"])
        metrics.execution_finished("gone", "ok", "OK", 1.0, 1.0, True)

        metrics.set_alerts(["kept"])

        text = generate_latest(metrics.registry).decode()
        assert 'alert_name="gone"' not in text
        assert 'alert_name="kept"' in text

    def test_late_execution_of_a_removed_alert_does_not_bring_it_back(self) -> None:
        metrics = Metrics(version="1")
        metrics.set_alerts(["gone"])
        metrics.set_alerts([])

        metrics.execution_finished("gone", "ok", "OK", 1.0, 1.0, True)
        metrics.execution_skipped("gone")

        assert 'alert_name="gone"' not in generate_latest(metrics.registry).decode()

    def test_unknown_outcome_is_rejected(self) -> None:
        metrics = Metrics(version="1")

        with pytest.raises(ValueError, match="outcome must be one of"):
            metrics.execution_finished("a", "maybe", "OK", 1.0, 1.0, True)

    def test_owed_counts_of_settled_channels_drop_to_zero_and_removed_ones_vanish(
        self,
    ) -> None:
        metrics = Metrics(version="1")
        metrics.set_channels(["slack", "mail"])
        metrics.set_owed({"slack": 3, "mail": 1})

        metrics.set_owed({"mail": 2})
        metrics.set_channels(["mail"])

        assert val(metrics, "notifications_owed", channel="mail") == 2
        assert val(metrics, "notifications_owed", channel="slack") is None
        assert 'channel="slack"' not in generate_latest(metrics.registry).decode()

    def test_owed_count_of_a_configured_channel_goes_to_zero(self) -> None:
        metrics = Metrics(version="1")
        metrics.set_channels(["slack"])
        metrics.set_owed({"slack": 3})

        metrics.set_owed({})

        assert val(metrics, "notifications_owed", channel="slack") == 0

    def test_deliveries_and_reloads_are_counted_by_result(self) -> None:
        metrics = Metrics(version="1")

        metrics.notification_delivered("slack", True, 0.1)
        metrics.notification_delivered("slack", False, 0.2)
        metrics.config_reloaded(False)
        metrics.config_reloaded(True, at=123.0)

        assert (
            val(metrics, "notifications_total", channel="slack", status="failure") == 1
        )
        assert val(metrics, "notification_duration_seconds_count", channel="slack") == 2
        assert val(metrics, "config_reloads_total", result="failure") == 1
        assert val(metrics, "config_last_reload_success_timestamp_seconds") == 123

    def test_uptime_and_build_info(self) -> None:
        now = [100.0]
        metrics = Metrics(version="1.2.3", revision="abc", clock=lambda: now[0])
        now[0] = 160.5

        found = samples(metrics)

        assert found[("sqlsentinel_uptime_seconds", frozenset())] == 60.5
        builds = [labels for name, labels in found if name == "sqlsentinel_build_info"]
        assert dict(builds[0])["version"] == "1.2.3"
        assert dict(builds[0])["revision"] == "abc"


class TestExposition:
    def test_odd_alert_names_round_trip_through_text_and_openmetrics(self) -> None:
        metrics = filled()

        text = generate_latest(metrics.registry).decode()
        om = generate_openmetrics(metrics.registry).decode()

        for parsed in (text_string_to_metric_families(text), parse_openmetrics(om)):
            names = {
                s.labels["alert_name"]
                for family in parsed
                if family.name == "sqlsentinel_alert_state"
                for s in family.samples
            }
            assert names == set(ODD_NAMES)

    def test_promtool_accepts_the_exposition_with_odd_names(
        self, tmp_path: Path
    ) -> None:
        tool = promtool()
        text = generate_latest(filled().registry)

        result = subprocess.run(
            [tool, "check", "metrics"], input=text, capture_output=True
        )

        assert result.returncode == 0, result.stdout + result.stderr

    def test_no_created_series_are_exported(self) -> None:
        text = generate_latest(filled().registry).decode()

        assert "_created" not in text

    def test_process_collector_is_registered(self) -> None:
        assert "process_start_time_seconds" in exported_names(
            generate_latest(Metrics(version="1").registry).decode()
        )

    def test_documented_metric_names_are_exactly_the_exported_ones(self) -> None:
        documented = set(
            re.findall(r"^\| `([a-z_]+)` \|", DOC.read_text(), re.MULTILINE)
        )

        exported = exported_names(generate_latest(filled().registry).decode())

        assert documented == exported


class TestRules:
    def test_promtool_accepts_the_documented_rules(self) -> None:
        result = subprocess.run(
            [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True
        )

        assert result.returncode == 0, result.stdout + result.stderr

    def test_rules_in_the_doc_match_the_rules_file(self) -> None:
        rule_names = set(re.findall(r"- alert: (\w+)", RULES.read_text()))

        assert rule_names == set(re.findall(r"- alert: (\w+)", DOC.read_text()))
        assert len(rule_names) >= 8

    def test_erroring_and_owed_rules_fire_on_matching_series(
        self, tmp_path: Path
    ) -> None:
        tests = tmp_path / "rules_test.yml"
        tests.write_text(
            f"""
rule_files: [{RULES}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: >-
          sqlsentinel_alert_state{{alert_name="orders",state="error",job="sqlsentinel"}}
        values: '1x30'
      - series: 'sqlsentinel_notifications_owed{{channel="pager", job="sqlsentinel"}}'
        values: '3x40'
    alert_rule_test:
      - eval_time: 20m
        alertname: SQLSentinelAlertErroring
        exp_alerts:
          - exp_labels:
              {{severity: warning, alert_name: orders, state: error, job: sqlsentinel}}
            exp_annotations:
              summary: Alert orders has failed to run for 15 minutes
              description: >-
                Its query errors or times out:
                the condition it watches is not being checked.
      - eval_time: 20m
        alertname: SQLSentinelNotificationsOwed
        exp_alerts: []
      - eval_time: 35m
        alertname: SQLSentinelNotificationsOwed
        exp_alerts:
          - exp_labels: {{severity: warning, channel: pager, job: sqlsentinel}}
            exp_annotations:
              summary: 3 notifications to pager are still undelivered
"""
        )

        result = subprocess.run(
            [promtool(), "test", "rules", str(tests)], capture_output=True, text=True
        )

        assert result.returncode == 0, result.stdout + result.stderr

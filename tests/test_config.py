"""Configuration files: the legacy format, extensions, substitution and error reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlsentinel.config import load_config, parse_duration
from sqlsentinel.errors import ConfigError

LEGACY = """
database:
  url: "sqlite:///data.db"
alerts:
  - name: daily_revenue
    description: Revenue below target
    enabled: true
    schedule: "0 9 * * *"
    query: |
      SELECT 'OK' AS status
    notify:
      - channel: email
        recipients: ["team@example.com"]
        subject: "Revenue Alert: {alert_name}"
      - channel: slack
        webhook_url: "${SLACK_WEBHOOK_URL}"
      - channel: webhook
        url: "https://example.com/hook"
        method: "POST"
        headers:
          Authorization: "Bearer ${WEBHOOK_TOKEN}"
"""


def issues_of(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env or {})
    return [str(i) for i in caught.value.issues]


class TestLegacyFormat:
    def test_existing_sql_sentinel_file_loads_without_edits(self, write_config):
        """A file in the existing SQL Sentinel format is accepted as it is."""
        path = write_config(LEGACY)

        cfg = load_config(
            path,
            {"SLACK_WEBHOOK_URL": "http://127.0.0.1:9/x", "WEBHOOK_TOKEN": "tok-123"},
        )

        alert = cfg.alert("daily_revenue")
        assert [c.channel for c in alert.notify] == ["email", "slack", "webhook"]
        assert alert.notify[1].webhook_url == "http://127.0.0.1:9/x"
        assert alert.notify[2].headers["Authorization"] == "Bearer tok-123"
        assert alert.database == "default" and alert.timezone == "UTC"
        assert alert.timeout == 60.0

    def test_defaults_apply_and_alert_settings_win(self, write_config):
        path = write_config("""
            databases:
              warehouse: {url: "sqlite:///w.db"}
            defaults:
              database: warehouse
              timezone: Europe/Paris
              timeout: 2m
              repeat_interval: 1h
              notify_on_recovery: false
              notify: [{channel: log}]
            alerts:
              - {name: a, schedule: "@daily", query: "SELECT 'OK' AS status"}
              - name: b
                interval: 30s
                timezone: America/New_York
                timeout: 5
                notify_on_recovery: true
                notify: []
                query: "SELECT 'OK' AS status"
        """)

        cfg = load_config(path, {})

        a, b = cfg.alert("a"), cfg.alert("b")
        assert (a.database, a.timezone, a.timeout, a.repeat_interval) == (
            "warehouse",
            "Europe/Paris",
            120.0,
            3600.0,
        )
        assert a.notify_on_recovery is False and [c.channel for c in a.notify] == [
            "log"
        ]
        assert (b.timezone, b.timeout, b.interval, b.notify_on_recovery, b.notify) == (
            "America/New_York",
            5.0,
            30.0,
            True,
            (),
        )


class TestEnvironmentSubstitution:
    def test_forms(self, write_config):
        """${X} and ${X:-default} are replaced; $X, $1 stay; $${ is a literal ${."""
        path = write_config("""
            database: {url: "sqlite:///${DB_FILE:-fallback.db}"}
            alerts:
              - name: "${PREFIX}_alert"
                schedule: "* * * * *"
                query: "SELECT 'OK' AS status, '$HOME $1 $${NOT_A_VAR}' AS note"
        """)

        cfg = load_config(path, {"PREFIX": "prod"})

        assert cfg.databases["default"].url == "sqlite:///fallback.db"
        assert cfg.alerts[0].name == "prod_alert"
        assert "'$HOME $1 ${NOT_A_VAR}' AS note" in cfg.alerts[0].query

    def test_unset_variable_is_an_error_naming_it(self, write_config):
        path = write_config(LEGACY)

        found = issues_of(path, {"SLACK_WEBHOOK_URL": "http://127.0.0.1:9/x"})

        assert len(found) == 1
        assert "WEBHOOK_TOKEN" in found[0] and "daily_revenue" in found[0]
        assert "alerts[0].notify[2].headers.Authorization" in found[0]


class TestErrors:
    def test_typo_in_a_key_is_reported_with_alert_and_field(self, write_config):
        path = write_config("""
            database: {url: "sqlite:///x.db"}
            alerts:
              - name: typo
                schedule: "* * * * *"
                query: "SELECT 'OK' AS status"
                notfy: [{channel: log}]
        """)

        found = issues_of(path)

        assert found == [
            f"{path}: alert 'typo': alerts[0].notfy: unknown key (check its spelling)"
        ]

    def test_every_error_is_listed_at_once(self, write_config):
        path = write_config("""
            database: {url: "sqlite:///x.db"}
            alerts:
              - {name: bad_cron, schedule: "61 * * * *", query: "SELECT 1"}
              - {name: never, schedule: "0 0 31 2 *", query: "SELECT 1"}
              - {name: bad_tz, schedule: "@daily", timezone: Mars/Olympus, query: "SELECT 1"}
              - {name: no_db, schedule: "@daily", database: nowhere, query: "SELECT 1"}
              - {name: bad_channel, schedule: "@daily", query: "SELECT 1", notify: [{channel: pager}]}
              - {name: bad_template, schedule: "@daily", query: "SELECT 1",
                 notify: [{channel: email, recipients: [a@b.c], subject: "{alert} down"}]}
              - {name: no_trigger, query: "SELECT 1"}
        """)

        found = "\n".join(issues_of(path))

        assert "'bad_cron': alerts[0].schedule" in found
        assert "'never': alerts[1].schedule" in found and "never fires" in found
        assert "'bad_tz': alerts[2].timezone" in found and "Mars/Olympus" in found
        assert (
            "'no_db': alerts[3].database" in found
            and "'nowhere' is not defined" in found
        )
        assert "'bad_channel': alerts[4].notify[0]" in found and "pager" in found
        assert (
            "'bad_template': alerts[5].notify[0].subject" in found
            and "{alert}" in found
        )
        assert "'no_trigger': alerts[6]" in found and "schedule" in found

    def test_duplicate_key_is_refused(self, write_config):
        path = write_config("""
            alerts:
              - name: a
                name: b
        """)

        found = issues_of(path)

        assert "duplicate key 'name'" in found[0] and "line 4" in found[0]

    def test_duplicate_alert_names(self, write_config):
        path = write_config("""
            database: {url: "sqlite:///x.db"}
            alerts:
              - {name: same, schedule: "@daily", query: "SELECT 1"}
              - {name: same, schedule: "@hourly", query: "SELECT 1"}
        """)

        assert "alerts[1].name: another alert has the same name" in issues_of(path)[0]

    def test_missing_file_and_bad_yaml(self, tmp_path, write_config):
        assert issues_of(tmp_path / "nope.yaml") == [
            f"{tmp_path / 'nope.yaml'}: file not found"
        ]
        assert "invalid YAML" in issues_of(write_config("alerts: [\n"))[0]

    def test_secret_from_environment_is_not_echoed_in_errors(self, write_config):
        path = write_config("""
            database: {url: "postgresql://u:${DB_PASSWORD}@127.0.0.1/x"}
            alerts:
              - {name: a, schedule: "@daily", query: "SELECT 1", notify: [{channel: slack, webhook_url: "not a url ${DB_PASSWORD}"}]}
        """)

        found = "\n".join(issues_of(path, {"DB_PASSWORD": "hunter2-secret"}))

        assert "webhook_url" in found and "hunter2-secret" not in found


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("2d", 172800),
        (90, 90),
        ("1.5", 1.5),
        ("250ms", 0.25),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-5s", "0", "5x", True])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_bad_webhook_header_is_a_validation_error(write_config):
    path = write_config("""
        database: {url: "sqlite:///x.db"}
        alerts:
          - name: hook
            schedule: "@daily"
            query: "SELECT 1"
            notify: [{channel: webhook, url: "http://127.0.0.1:9/x", headers: {"Bad Header": "v"}}]
    """)

    found = issues_of(path)

    assert found == [
        f"{path}: alert 'hook': alerts[0].notify[0].headers: 'Bad Header' is not a valid HTTP header name"
    ]


def test_a_secret_rejected_by_validation_is_not_echoed(write_config):
    path = write_config("""
        database: {url: "sqlite:///x.db"}
        alerts:
          - {name: a, schedule: "@daily", timezone: "${API_TOKEN}", query: "SELECT 1"}
    """)

    found = issues_of(path, {"API_TOKEN": "tok-9f8e7d6c5b"})

    assert "alerts[0].timezone" in found[0] and "tok-9f8e7d6c5b" not in found[0]


def test_alias_bomb_is_refused_quickly(write_config):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = write_config("\n".join(lines) + "\n")

    found = issues_of(path)

    assert "expands to more than 2,000,000 values" in found[0]


@pytest.mark.parametrize(
    ("database", "message"),
    [
        ('{url: "garbage"}', "is not a database URL"),
        (
            '{url: "oracle+nosuchdriver://u@127.0.0.1/x"}',
            "no installed driver handles 'oracle+nosuchdriver'",
        ),
    ],
)
def test_database_urls_are_checked(write_config, database, message):
    path = write_config(f"""
        database: {database}
        state: {database}
        alerts: [{{name: a, schedule: "@daily", query: "  "}}]
    """)

    found = "\n".join(issues_of(path))

    assert f"database.url: {message}" in found and f"state.url: {message}" in found
    assert "alerts[0].query: is empty" in found


def test_secrets_in_names_and_lowercased_echoes_are_masked(write_config):
    path = write_config("""
        database: {url: "sqlite:///x.db"}
        alerts:
          - {name: "${API_TOKEN}", schedule: "0 ${API_TOKEN} * * *", query: "SELECT 1"}
    """)

    found = issues_of(path, {"API_TOKEN": "tok-SEKRIT-4242"})

    assert "tok-sekrit-4242" not in "\n".join(found).lower()
    assert "alerts[0].schedule" in found[0]


def test_an_unset_variable_is_reported_once(write_config):
    path = write_config("""
        database: {url: "sqlite:///x.db"}
        alerts:
          - {name: a, schedule: "@daily", query: "SELECT 1", notify: [{channel: webhook, url: "${HOOK_URL}"}]}
    """)

    found = issues_of(path)

    assert len(found) == 1 and "HOOK_URL is not set" in found[0]


def test_legacy_smtp_variables_are_checked_by_validation(write_config):
    path = write_config("""
        database: {url: "sqlite:///x.db"}
        alerts:
          - {name: a, schedule: "@daily", query: "SELECT 1", notify: [{channel: email, recipients: [a@b.c]}]}
    """)

    found = issues_of(path, {"SMTP_USE_TLS": "maybe"})

    assert len(found) == 1 and "SMTP_USE_TLS" in found[0]

"""The command line, run as a user runs it: a subprocess, real files, real receivers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures_core import set_level

SENTINEL = [sys.executable, "-m", "sqlsentinel"]

CONFIG = """
database: {{url: "sqlite:///{db}"}}
alerts:
  - name: level_high
    {trigger}
    query: "SELECT CASE WHEN value > 10 THEN 'ALERT' ELSE 'OK' END AS status, value AS actual_value, 10 AS threshold FROM numbers"
    notify: [{{channel: webhook, url: "{hook}"}}]
"""


def sentinel(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SENTINEL, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def history_of(state_url: str) -> list[dict[str, Any]]:
    """The recorded executions, as `sqlsentinel history --json` lists them."""
    result = sentinel("history", "--state-db", state_url, "--json")
    return list(json.loads(result.stdout)["executions"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def config(write_config, sample_db, http_receiver):
    return write_config(
        CONFIG.format(
            db=sample_db,
            hook=http_receiver.url("/hook"),
            trigger='schedule: "* * * * *"',
        )
    )


class TestRun:
    def test_exit_codes_follow_the_outcome(
        self, config, sample_db, state_url, write_config
    ):
        """0 when all OK, 1 when firing, 3 when an execution failed, 2 for a bad config."""
        ok = sentinel("run", str(config), "--state-db", state_url)
        set_level(sample_db, 50)
        firing = sentinel("run", str(config), "--state-db", state_url)
        broken = write_config(
            CONFIG.format(
                db=sample_db, hook="http://127.0.0.1:9/x", trigger='schedule: "@daily"'
            ).replace("FROM numbers", "FROM missing_table"),
            "broken.yaml",
        )
        failed = sentinel("run", str(broken), "--state-db", state_url)
        bad = write_config("alerts: [{name: x, notfy: 1}]", "bad.yaml")
        invalid = sentinel("run", str(bad), "--state-db", state_url)

        assert [
            ok.returncode,
            firing.returncode,
            failed.returncode,
            invalid.returncode,
        ] == [0, 1, 3, 2]
        assert "missing_table" in failed.stdout
        assert "alerts[0].notfy: unknown key" in invalid.stderr

    def test_json_output_and_notification(
        self, config, sample_db, state_url, http_receiver
    ):
        set_level(sample_db, 50)

        result = sentinel("run", str(config), "--state-db", state_url, "--json")

        doc = json.loads(result.stdout)
        execution = doc["executions"][0]
        assert (
            execution["alert_name"],
            execution["outcome"],
            execution["actual_value"],
        ) == ("level_high", "alert", 50)
        assert execution["notifications"] == [
            {
                "channel": "webhook",
                "kind": "firing",
                "status": "delivered",
                "attempts": 1,
                "error": None,
                "delivered_at": execution["notifications"][0]["delivered_at"],
            }
        ]
        assert (
            http_receiver.requests[0].json()["execution_id"]
            == execution["execution_id"]
        )

    def test_dry_run_records_nothing(self, config, sample_db, state_url, http_receiver):
        set_level(sample_db, 50)

        result = sentinel(
            "run", str(config), "--state-db", state_url, "--dry-run", "--json"
        )
        history = sentinel("history", "--state-db", state_url, "--json")

        assert result.returncode == 1 and json.loads(result.stdout)["dry_run"] is True
        assert (
            json.loads(history.stdout)["executions"] == []
            and http_receiver.requests == []
        )

    def test_unknown_alert_is_a_usage_error(self, config, state_url):
        result = sentinel(
            "run", str(config), "--alert", "nope", "--state-db", state_url
        )

        assert result.returncode == 2 and "no alert named 'nope'" in result.stderr

    def test_state_db_from_environment(self, config, tmp_path):
        url = f"sqlite:///{tmp_path / 'from-env.db'}"

        sentinel("run", str(config), env={"SQLSENTINEL_STATE_DB": url})

        assert (tmp_path / "from-env.db").exists()


class TestStateCommands:
    def test_history_status_silence(self, config, sample_db, state_url, http_receiver):
        set_level(sample_db, 50)
        silenced = sentinel(
            "silence",
            "--alert",
            "level_high",
            "--duration",
            "2h",
            "-c",
            str(config),
            "--state-db",
            state_url,
        )
        sentinel("run", str(config), "--state-db", state_url)
        status = sentinel(
            "status", "-c", str(config), "--state-db", state_url, "--json"
        )
        history = sentinel(
            "history", "--state-db", state_url, "--json", "--alert", "level_high"
        )
        unsilenced = sentinel(
            "unsilence", "--alert", "level_high", "--state-db", state_url
        )
        sentinel("run", str(config), "--state-db", state_url)

        assert silenced.returncode == 0 and "silenced until" in silenced.stdout
        row = json.loads(status.stdout)["alerts"][0]
        assert row["status"] == "ALERT" and row["silenced_until"] is not None
        assert status.returncode == 1
        assert json.loads(history.stdout)["executions"][0]["silenced"] is True
        assert "1 silence(s) ended" in unsilenced.stdout
        assert [r.json()["kind"] for r in http_receiver.requests] == ["firing"]

    def test_bad_duration(self, state_url):
        result = sentinel(
            "silence", "--alert", "a", "--duration", "soon", "--state-db", state_url
        )

        assert result.returncode == 2 and "--duration" in result.stderr


class TestValidate:
    def test_valid_and_invalid(self, config, write_config):
        bad = write_config(
            """
            database: {url: "sqlite:///x.db"}
            alerts:
              - {name: a, schedule: "0 0 31 2 *", query: "SELECT 1"}
              - {name: b, schedule: "@daily", query: "SELECT 1", notify: [{channel: email, recipients: [nobody]}]}
        """,
            "bad.yaml",
        )

        good = sentinel("validate", str(config))
        result = sentinel("validate", str(bad), "--json")

        assert good.returncode == 0 and "valid (1 alerts" in good.stdout
        assert result.returncode == 2
        errors = json.loads(result.stdout)["errors"]
        assert [(e["alert"], e["field"]) for e in errors] == [
            ("a", "alerts[0].schedule"),
            ("b", "alerts[1].notify[0].recipients"),
        ]


def test_init_writes_a_config_that_runs(tmp_path, state_url):
    written = sentinel("init", str(tmp_path / "starter"))
    run = sentinel(
        "run",
        str(tmp_path / "starter" / "alerts.yaml"),
        "--state-db",
        state_url,
        "--json",
    )
    again = sentinel("init", str(tmp_path / "starter"))

    assert written.returncode == 0
    outcomes = {
        e["alert_name"]: e["outcome"] for e in json.loads(run.stdout)["executions"]
    }
    assert outcomes == {
        "revenue_below_target": "alert",
        "pending_orders_backlog": "ok",
        "api_error_rate": "ok",
    }
    assert again.returncode == 2 and "--force" in again.stderr


class TestDaemon:
    def start(
        self, config: Path, state_url: str, *extra: str
    ) -> tuple[subprocess.Popen[str], int]:
        port = free_port()
        proc = subprocess.Popen(
            [
                *SENTINEL,
                "daemon",
                str(config),
                "--state-db",
                state_url,
                "--http-host",
                "127.0.0.1",
                "--http-port",
                str(port),
                "--log-format",
                "json",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return proc, port

    def wait_ready(self, port: int, proc: subprocess.Popen[str]) -> None:
        for _ in range(200):
            if proc.poll() is not None:
                pytest.fail(
                    f"daemon exited: {proc.stderr.read() if proc.stderr else ''}"
                )
            try:
                if (
                    httpx.get(
                        f"http://127.0.0.1:{port}/health/ready", timeout=1
                    ).status_code
                    == 200
                ):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail("daemon never became ready")

    def test_runs_on_schedule_notifies_records_reloads_and_stops_cleanly(
        self, write_config, sample_db, state_url, http_receiver
    ):
        """The daemon queries on its schedule, notifies a receiver, keeps running on a bad reload, exits 0 on SIGTERM."""
        config = write_config(
            CONFIG.format(
                db=sample_db, hook=http_receiver.url("/hook"), trigger="interval: 1s"
            )
        )
        set_level(sample_db, 50)
        proc, port = self.start(config, state_url)
        try:
            self.wait_ready(port, proc)
            http_receiver.wait_for(1)
            config.write_text("alerts: [oops")
            proc.send_signal(signal.SIGHUP)
            time.sleep(1.5)
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)

        assert proc.returncode == 0, err
        assert http_receiver.requests[0].json()["kind"] == "firing"
        assert len(http_receiver.requests) == 1  # fired once, not on every run
        assert (
            health["status"] == "healthy"
            and health["checks"]["scheduler"]["jobs_count"] == 1
        )
        assert 'sqlsentinel_config_reloads_total{result="failure"} 1.0' in metrics
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert any(
            line["message"] == "config reload failed; keeping the running configuration"
            for line in lines
        )
        executed = [line for line in lines if line["message"] == "alert executed"]
        assert len(executed) >= 2 and {
            line["context"]["alert_name"] for line in executed
        } == {"level_high"}
        history = history_of(state_url)
        assert {h["trigger"] for h in history} == {"schedule"} and len(history) >= 2

    @pytest.mark.postgres
    def test_sigterm_mid_run_records_what_was_cut_short(
        self, write_config, state_url, http_receiver
    ):
        config = write_config(f"""
            database: {{url: "postgresql://postgres@127.0.0.1:5432/test"}}
            daemon: {{shutdown_grace: 1s}}
            alerts:
              - name: slow
                interval: 1h
                timeout: 60s
                query: "SELECT 'OK' AS status FROM pg_sleep(30)"
                notify: [{{channel: webhook, url: "{http_receiver.url("/hook")}"}}]
        """)
        proc, port = self.start(config, state_url, "--run-on-start")
        self.wait_ready(port, proc)
        time.sleep(1)

        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)

        assert proc.returncode == 0
        history = history_of(state_url)
        assert [(h["alert_name"], h["outcome"], h["error"]) for h in history] == [
            ("slow", "cancelled", "cut short by shutdown")
        ]


class TestErrorsAreClear:
    def test_read_commands_do_not_create_a_state_database(self, tmp_path):
        missing = tmp_path / "nowhere" / "state.db"

        result = sentinel("status", "--state-db", f"sqlite:///{missing}", "--json")

        assert result.returncode == 3
        assert json.loads(result.stdout)["error"].startswith(
            f"no state database at {missing}"
        )
        assert not missing.parent.exists()

    def test_bad_state_url_is_a_usage_error(self):
        result = sentinel("history", "--state-db", "notaurl")

        assert result.returncode == 2 and "is not a database URL" in result.stderr
        assert "Traceback" not in result.stderr

    def test_run_json_reports_a_bad_config_as_one_document(
        self, write_config, state_url
    ):
        bad = write_config("alerts: [{name: x, notfy: 1}]", "bad.yaml")

        result = sentinel("run", str(bad), "--state-db", state_url, "--json")

        assert result.returncode == 2
        assert json.loads(result.stdout)["valid"] is False

    def test_port_out_of_range(self, config, state_url):
        result = sentinel(
            "daemon", str(config), "--state-db", state_url, "--http-port", "70000"
        )

        assert result.returncode == 2 and "Traceback" not in result.stderr

    @pytest.mark.postgres
    def test_sigterm_during_run_records_what_was_cut_short(
        self, write_config, state_url
    ):
        config = write_config("""
            database: {url: "postgresql://postgres@127.0.0.1:5432/test"}
            alerts:
              - {name: slow, schedule: "@daily", query: "SELECT 'OK' AS status FROM pg_sleep(30)"}
        """)
        proc = subprocess.Popen(
            [*SENTINEL, "run", str(config), "--state-db", state_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(2)

        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)

        assert proc.returncode == 143
        history = history_of(state_url)
        assert [(h["alert_name"], h["outcome"]) for h in history] == [
            ("slow", "cancelled")
        ]


def test_daemon_with_its_state_database_down_runs_unready_instead_of_crashing(
    write_config, sample_db
):
    """It serves 503 with the reason rather than exiting, so probes and operators see why."""
    config = write_config(
        CONFIG.format(db=sample_db, hook="http://127.0.0.1:9/x", trigger="interval: 1s")
    )
    daemon = TestDaemon()
    proc, port = daemon.start(
        config, f"postgresql://postgres:pw-s3cret@127.0.0.1:{free_port()}/state"
    )
    try:
        for _ in range(200):
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1)
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                if (
                    health.json()["checks"]["database"]["state_database"]["status"]
                    == "unhealthy"
                ):
                    break
            except (httpx.TransportError, KeyError):
                pass
            time.sleep(0.05)
        alive = proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)

    assert alive
    assert ready.status_code == 503 and health.status_code == 503
    assert proc.returncode == 0
    assert "pw-s3cret" not in out + health.text

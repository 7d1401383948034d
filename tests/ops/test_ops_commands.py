"""sentinel-ops commands end to end in-process: exit codes, JSON documents, messages.

The engine here is a fake (tests/ops/conftest.py) because these are the error paths a
real engine does not produce on demand: an interrupt mid-build, a container that
ignores SIGTERM, a push stream that ends without a digest. HTTP is real (loopback).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from ops_doubles import health_document, metrics_text

from sqlsentinel_ops.engine import Layer
from sqlsentinel_ops.errors import ExitCode


class TestJsonContract:
    def test_json_mode_prints_one_document_on_stdout(self, invoke, sentinel_http):
        """With --json stdout holds exactly one JSON document; people read stderr."""
        result = invoke("validate", sentinel_http.url, "--json")

        assert result.exit_code == 0
        assert result.document["command"] == "validate"
        assert result.document["ok"] is True
        assert result.document["exit_code"] == 0
        assert "PASS" in result.stderr

    def test_without_json_stdout_is_human(self, invoke, sentinel_http):
        """Without --json the checks are plain lines on stdout."""
        result = invoke("validate", sentinel_http.url)

        assert result.stdout.splitlines()[0].startswith("PASS  /health schema")


class TestBuild:
    def make_context(self, tmp_path):
        (tmp_path / "sqlsentinel").mkdir()
        (tmp_path / "sqlsentinel" / "__init__.py").write_text('__version__ = "9.8.7"\n')
        (tmp_path / "Dockerfile").write_text(
            "ARG BASE_IMAGE=python:3.11-slim\nFROM x\n"
        )
        return tmp_path

    def test_error_in_stream_fails_with_step_and_message(
        self, invoke, fake_engine, tmp_path
    ):
        """An error chunk fails the build even though the HTTP answer was 200."""
        fake_engine.build_chunks = [
            {"stream": "Step 1/2 : FROM x\n"},
            {"stream": "Step 2/2 : RUN make\n"},
            {"stream": "make: *** no rule\n"},
            {
                "error": "The command returned a non-zero code: 2",
                "errorDetail": {
                    "code": 2,
                    "message": "The command returned a non-zero code: 2",
                },
            },
        ]

        result = invoke("build", str(self.make_context(tmp_path)), "--json")

        assert result.exit_code == ExitCode.CHECK_FAILED
        error = result.document["error"]
        assert error["step"] == "Step 2/2 : RUN make"
        assert "non-zero code: 2" in error["message"]
        assert "Build failed at Step 2/2 : RUN make" in result.stderr
        assert "make: *** no rule" in result.stderr

    def test_success_reports_id_tags_size_and_labels(
        self, invoke, fake_engine, tmp_path
    ):
        """A good stream ends with the image id, the version tag and the size."""
        fake_engine.build_chunks = [
            {"stream": "Step 1/1 : FROM x\n"},
            {"aux": {"ID": "sha256:abc"}},
        ]
        fake_engine.add_image("sha256:abc", size=123_000_000)
        fake_engine.images["sha256:abc"] = fake_engine.images["sha256:abc"]

        result = invoke("build", str(self.make_context(tmp_path)), "--latest", "--json")

        assert result.exit_code == 0, result.stderr
        assert result.document["tags"][0] == "sqlsentinel:9.8.7"
        assert result.document["tags"][-1] == "sqlsentinel:latest"
        assert result.document["size_bytes"] == 123_000_000
        assert "sqlsentinel:latest" in fake_engine.tagged

    def test_stream_without_image_id_fails(self, invoke, fake_engine, tmp_path):
        """A build stream that stops early is a failure, not a silent success."""
        fake_engine.build_chunks = [{"stream": "Step 1/3 : FROM x\n"}]

        result = invoke("build", str(self.make_context(tmp_path)))

        assert result.exit_code == ExitCode.CHECK_FAILED
        assert "without reporting an image id" in result.stderr

    def test_interrupt_exits_130(self, invoke, fake_engine, tmp_path):
        """Ctrl-C during the build stream exits 130 with a JSON error."""
        fake_engine.build_chunks = [
            {"stream": "Step 1/2 : FROM x\n"},
            {"interrupt": True},
        ]

        result = invoke("build", str(self.make_context(tmp_path)), "--json")

        assert result.exit_code == ExitCode.INTERRUPTED
        assert result.document["error"]["kind"] == "interrupted"

    def test_missing_dockerfile_is_a_usage_error(self, invoke, fake_engine, tmp_path):
        result = invoke("build", str(tmp_path), "--file", "Nope")

        assert result.exit_code == ExitCode.USAGE
        assert "Nope: no such Dockerfile" in result.stderr

    def test_bad_build_arg_is_a_usage_error(self, invoke, fake_engine, tmp_path):
        result = invoke(
            "build", str(self.make_context(tmp_path)), "--build-arg", "NOVALUE"
        )

        assert result.exit_code == ExitCode.USAGE
        assert "expected KEY=VALUE" in result.stderr


class TestPush:
    DIGEST = "sha256:" + "d" * 64

    def events(self) -> list[dict[str, Any]]:
        return [
            {"status": "The push refers to repository [127.0.0.1:5000/sqlsentinel]"},
            {"status": "Preparing", "id": "aaa", "progressDetail": {}},
            {
                "status": "Pushing",
                "id": "aaa",
                "progressDetail": {"current": 5, "total": 10},
            },
            {"status": "Pushed", "id": "aaa", "progressDetail": {}},
            {"status": "Layer already exists", "id": "bbb", "progressDetail": {}},
            {"aux": {"Tag": "1.0", "Digest": self.DIGEST, "Size": 529}},
        ]

    def test_in_band_error_fails_the_push(self, invoke, fake_engine):
        """`denied` inside a 200 stream fails the command."""
        fake_engine.add_image("sqlsentinel:1.0")
        fake_engine.push_events = [
            {"status": "Preparing", "id": "aaa", "progressDetail": {}},
            {
                "error": "denied: requested access to the resource is denied",
                "errorDetail": {
                    "message": "denied: requested access to the resource is denied"
                },
            },
        ]

        result = invoke(
            "push", "sqlsentinel:1.0", "--registry", "127.0.0.1:5000", "--json"
        )

        assert result.exit_code == ExitCode.CHECK_FAILED
        assert result.document["error"]["error"].startswith("denied:")

    def test_success_reports_digest_and_layer_counts(self, invoke, fake_engine):
        fake_engine.add_image("sqlsentinel:1.0")
        fake_engine.push_events = self.events()

        result = invoke(
            "push", "sqlsentinel:1.0", "--registry", "127.0.0.1:5000", "--json"
        )

        assert result.exit_code == 0, result.stderr
        assert result.document["pushed"] == [
            {
                "ref": "127.0.0.1:5000/sqlsentinel:1.0",
                "digest": self.DIGEST,
                "size": 529,
                "layers_pushed": 1,
                "layers_existing": 1,
            }
        ]
        assert fake_engine.tagged == ["127.0.0.1:5000/sqlsentinel:1.0"]
        assert "  aaa: Pushed" in result.stderr

    def test_stream_without_digest_fails(self, invoke, fake_engine):
        fake_engine.add_image("sqlsentinel:1.0")
        fake_engine.push_events = self.events()[:-1]

        result = invoke("push", "sqlsentinel:1.0", "--registry", "127.0.0.1:5000")

        assert result.exit_code == ExitCode.CHECK_FAILED
        assert "without a digest" in result.stderr

    def test_password_from_stdin_is_used_and_never_printed(self, invoke, fake_engine):
        """The registry may echo what it got; the password is masked anyway."""
        fake_engine.add_image("sqlsentinel:1.0")
        secret = "s3cret-from-stdin"
        fake_engine.push_events = [{"error": f"unauthorized: bad password {secret}"}]

        result = invoke(
            "push",
            "sqlsentinel:1.0",
            "--registry",
            "127.0.0.1:5001",
            "--username",
            "ci",
            "--password-stdin",
            "--json",
            stdin=secret + "\n",
        )

        assert result.exit_code == ExitCode.CHECK_FAILED
        assert fake_engine.pushed_auth == [{"username": "ci", "password": secret}]
        assert secret not in result.stdout + result.stderr

    def test_credentials_from_environment(self, invoke, fake_engine):
        fake_engine.add_image("sqlsentinel:1.0")
        fake_engine.push_events = self.events()
        env = {
            "SENTINEL_OPS_REGISTRY_USER": "ci",
            "SENTINEL_OPS_REGISTRY_PASSWORD": "pw-env-1",
        }

        result = invoke(
            "push", "sqlsentinel:1.0", "--registry", "127.0.0.1:5001", env=env
        )

        assert result.exit_code == 0, result.stderr
        assert fake_engine.pushed_auth == [{"username": "ci", "password": "pw-env-1"}]

    def test_user_without_password_is_a_usage_error(self, invoke, fake_engine):
        fake_engine.add_image("sqlsentinel:1.0")

        result = invoke("push", "sqlsentinel:1.0", "--username", "ci")

        assert result.exit_code == ExitCode.USAGE
        assert "without a password" in result.stderr

    def test_there_is_no_password_option(self, invoke, fake_engine):
        """A password on the command line would land in shell history and CI logs."""
        result = invoke("push", "sqlsentinel:1.0", "--password", "x")

        assert result.exit_code == ExitCode.USAGE

    def test_all_tags_pushes_every_tag_of_the_name(self, invoke, fake_engine):
        fake_engine.add_image("sqlsentinel:1.0")
        fake_engine.add_image("sqlsentinel:abc123")
        fake_engine.add_image("other:1")
        fake_engine.push_events = self.events()

        result = invoke(
            "push",
            "sqlsentinel",
            "--all-tags",
            "--registry",
            "127.0.0.1:5000",
            "--json",
        )

        refs = [p["ref"] for p in result.document["pushed"]]
        assert refs == [
            "127.0.0.1:5000/sqlsentinel:1.0",
            "127.0.0.1:5000/sqlsentinel:abc123",
        ]

    def test_name_without_tag_means_latest(self, invoke, fake_engine):
        fake_engine.add_image("sqlsentinel:1.0")

        result = invoke("push", "sqlsentinel", "--registry", "127.0.0.1:5000")

        assert result.exit_code == ExitCode.IMAGE_NOT_FOUND
        assert "sqlsentinel:latest does not exist" in result.stderr

    def test_tag_option_pushes_the_image_under_new_tags(self, invoke, fake_engine):
        fake_engine.add_image("sqlsentinel:1.0")
        fake_engine.push_events = self.events()

        result = invoke(
            "push",
            "sqlsentinel:1.0",
            "--registry",
            "127.0.0.1:5000",
            "--name",
            "sentinel",
            "--tag",
            "stable",
            "--json",
        )

        assert result.exit_code == 0, result.stderr
        assert result.document["pushed"][0]["ref"] == "127.0.0.1:5000/sentinel:stable"
        assert fake_engine.tagged == ["127.0.0.1:5000/sentinel:stable"]

    def test_all_tags_with_a_tag_is_a_usage_error(self, invoke, fake_engine):
        result = invoke("push", "sqlsentinel:1.0", "--all-tags")

        assert result.exit_code == ExitCode.USAGE


class TestMeasure:
    def test_budget_exceeded_fails(self, invoke, fake_engine):
        fake_engine.add_image("sqlsentinel:1.0", size=350_000_000)
        fake_engine.layers = [Layer("/bin/sh -c pip install x", 200_000_000)]

        result = invoke("measure", "sqlsentinel:1.0", "--max-size", "300MB", "--json")

        assert result.exit_code == ExitCode.CHECK_FAILED
        assert result.document["max_size_bytes"] == 300_000_000
        assert result.document["size_bytes"] == 350_000_000

    def test_layers_largest_first_with_base_share(self, invoke, fake_engine):
        base = "python:3.11-slim"
        fake_engine.add_image(
            "sqlsentinel:1.0",
            size=200_000_000,
            **{"org.opencontainers.image.base.name": base},
        )
        fake_engine.add_image(base, size=120_000_000)
        fake_engine.layers = [
            Layer('/bin/sh -c #(nop)  CMD ["daemon"]', 0),
            Layer("/bin/sh -c #(nop) COPY dir:1 in /opt/venv ", 70_000_000),
            Layer("|1 EXTRAS=mysql /bin/sh -c useradd x", 10_000),
            Layer("", 120_000_000, "Imported from -"),
        ]

        result = invoke("measure", "sqlsentinel:1.0", "--max-size", "300MB", "--json")

        assert result.exit_code == 0
        assert [la["instruction"] for la in result.document["layers"]] == [
            "Imported from -",
            "COPY dir:1 in /opt/venv",
            "RUN useradd x",
        ]
        assert result.document["base_share"] == 0.6

    def test_unknown_size_unit_is_a_usage_error(self, invoke, fake_engine):
        result = invoke("measure", "x", "--max-size", "300XB")

        assert result.exit_code == ExitCode.USAGE
        assert "unknown size unit 'XB'" in result.stderr

    def test_missing_image_has_its_own_exit_code(self, invoke, fake_engine):
        result = invoke("measure", "nope:1", "--json")

        assert result.exit_code == ExitCode.IMAGE_NOT_FOUND
        assert result.document["error"]["kind"] == "image_not_found"


class TestContainerCommands:
    """`test` and `benchmark` against a fake container backed by a canned server."""

    @pytest.fixture
    def engine(self, fake_engine, sentinel_http):
        fake_engine.add_image("sqlsentinel:1.0")
        fake_engine.http_port = int(sentinel_http.url.rsplit(":", 1)[1])
        return fake_engine

    def test_all_steps_pass_and_container_is_removed(self, invoke, engine):
        result = invoke("test", "sqlsentinel:1.0", "--json")

        assert result.exit_code == 0, result.stderr
        assert all(step["ok"] for step in result.document["steps"])
        assert len(result.document["steps"]) == 7
        container = engine.containers[0]
        assert container.removed
        assert container.signals == ["SIGTERM"]
        assert b"sentinel-ops-smoke" in container.files["/sentinel-ops/alerts.yaml"]
        # The leftover filter of docs/operations/sentinel-ops.md finds it.
        assert container.spec.labels["org.sqlsentinel.ops.command"] == "test"

    def test_container_ignoring_sigterm_fails_the_test(self, invoke, engine):
        engine.exit_code_on_sigterm = None

        result = invoke("test", "sqlsentinel:1.0", "--grace", "100ms", "--json")

        assert result.exit_code == ExitCode.CHECK_FAILED
        last = result.document["steps"][-1]
        assert last["name"] == "SIGTERM stops it with exit code 0"
        assert "still running" in last["detail"]
        assert engine.containers[0].removed

    def test_exit_code_after_sigterm_is_checked(self, invoke, engine):
        engine.exit_code_on_sigterm = 143

        result = invoke("test", "sqlsentinel:1.0", "--json")

        assert result.document["steps"][-1]["detail"] == "exit code 143"

    def test_container_that_exits_fails_fast_and_shows_logs(
        self, invoke, engine, sentinel_http
    ):
        engine.state_after_start = "exited"
        sentinel_http.routes.clear()

        result = invoke("test", "sqlsentinel:1.0")

        assert result.exit_code == ExitCode.CHECK_FAILED
        assert "FAIL  /health answers healthy  the container exited" in result.stdout
        assert "| fake daemon: configuration error" in result.stdout
        assert engine.containers[0].removed

    def test_missing_metric_family_fails(self, invoke, engine, sentinel_http):
        sentinel_http.set_metrics(metrics_text(omit="sqlsentinel_scheduler_jobs"))

        result = invoke("test", "sqlsentinel:1.0", "--json")

        failed = [s for s in result.document["steps"] if not s["ok"]]
        assert failed[0]["detail"] == "missing: sqlsentinel_scheduler_jobs"

    def test_failing_healthcheck_command_fails(self, invoke, engine):
        engine.exec_result = (1, "connection refused")

        result = invoke("test", "sqlsentinel:1.0", "--json")

        failed = [s for s in result.document["steps"] if not s["ok"]]
        assert failed[0]["name"] == "image HEALTHCHECK command passes"
        assert "exit code 1: connection refused" in failed[0]["detail"]

    def test_interrupt_removes_the_container_and_exits_130(self, invoke, engine):
        engine.interrupt_on_start = True

        result = invoke("test", "sqlsentinel:1.0")

        assert result.exit_code == ExitCode.INTERRUPTED
        assert engine.containers[0].removed

    def test_benchmark_budget_and_history(self, invoke, engine, tmp_path):
        history = tmp_path / "bench.jsonl"
        first = invoke(
            "benchmark", "sqlsentinel:1.0", "-n", "2", "--history", str(history)
        )

        second = invoke(
            "benchmark",
            "sqlsentinel:1.0",
            "-n",
            "2",
            "--history",
            str(history),
            "--max-startup",
            "5s",
            "--max-memory",
            "1MB",
            "--json",
        )

        assert first.exit_code == 0, first.stderr
        assert second.exit_code == ExitCode.CHECK_FAILED
        assert second.document["failures"] == ["memory 40.0 MB exceeds 1.0 MB"]
        assert second.document["delta"]["memory_median_bytes"] == 0
        lines = history.read_text().splitlines()
        assert [json.loads(line)["runs"] for line in lines] == [2, 2]
        assert len(engine.containers) == 4
        assert all(c.removed for c in engine.containers)

    def test_benchmark_corrupt_history_is_a_usage_error(self, invoke, engine, tmp_path):
        history = tmp_path / "bench.jsonl"
        history.write_text("{not json\n")

        result = invoke("benchmark", "sqlsentinel:1.0", "--history", str(history))

        assert result.exit_code == ExitCode.USAGE
        assert "line 1 is not JSON" in result.stderr
        assert engine.containers == []


class TestValidate:
    def test_unhealthy_fails_and_names_the_reason(self, invoke, sentinel_http):
        document = health_document("unhealthy")
        document["checks"]["database"] = {
            "status": "unhealthy",
            "state_database": {"status": "unhealthy", "message": "disk I/O error"},
        }
        sentinel_http.set_health(document)

        result = invoke("validate", sentinel_http.url)

        assert result.exit_code == ExitCode.CHECK_FAILED
        assert (
            "FAIL  component database  unhealthy: state_database: disk I/O error"
            in (result.stdout)
        )

    def test_degraded_passes_unless_asked(self, invoke, sentinel_http):
        document = health_document("degraded")
        document["checks"]["notifications"] = {
            "status": "degraded",
            "channels": {"slack": {"status": "degraded", "message": "HTTP 500"}},
        }
        sentinel_http.set_health(document)

        lenient = invoke("validate", sentinel_http.url)
        strict = invoke("validate", sentinel_http.url, "--fail-on-degraded")

        assert lenient.exit_code == 0
        assert "WARN  component notifications  degraded: channels.slack: HTTP 500" in (
            lenient.stdout
        )
        assert strict.exit_code == ExitCode.CHECK_FAILED

    def test_schema_problems_are_listed(self, invoke, sentinel_http):
        document = health_document()
        del document["timestamp"]
        del document["checks"]["scheduler"]
        sentinel_http.set_health(document)

        result = invoke("validate", sentinel_http.url, "--json")

        assert result.exit_code == ExitCode.CHECK_FAILED
        detail = result.document["checks"][0]["detail"]
        assert "timestamp is missing" in detail
        assert "checks.scheduler is missing" in detail

    def test_status_code_must_match_status(self, invoke, sentinel_http):
        sentinel_http.set_health(health_document("unhealthy"), 200)

        result = invoke("validate", sentinel_http.url, "--json")

        assert (
            "HTTP status 200 for unhealthy, expected 503"
            in (result.document["checks"][0]["detail"])
        )

    def test_metrics_that_do_not_parse_fail(self, invoke, sentinel_http):
        sentinel_http.set_metrics("this is { not prometheus\n")

        result = invoke("validate", sentinel_http.url, "--json")

        assert result.exit_code == ExitCode.CHECK_FAILED
        assert result.document["checks"][-1]["name"] == "/metrics parses"

    def test_nothing_listening_fails_in_one_line(self, invoke):
        from sqlsentinel_ops.containers import free_port

        result = invoke("validate", f"http://127.0.0.1:{free_port()}")

        assert result.exit_code == ExitCode.CHECK_FAILED
        assert result.stdout.startswith("FAIL  /health answers")

    def test_latency_is_reported_per_endpoint(self, invoke, sentinel_http):
        result = invoke("validate", sentinel_http.url, "--json")

        timed = {
            c["name"] for c in result.document["checks"] if c["latency_ms"] is not None
        }
        assert timed == {
            "/health schema",
            "/health/live",
            "/health/ready",
            "/metrics families",
        }

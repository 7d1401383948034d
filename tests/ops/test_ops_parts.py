"""The pieces behind the commands: units, build plans, statistics, output, start-up."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sqlsentinel_ops import cli
from sqlsentinel_ops.benchmark import budget_failures, deltas, last_record, summarize
from sqlsentinel_ops.build import plan_build, source_url
from sqlsentinel_ops.errors import ExitCode, UsageProblem
from sqlsentinel_ops.output import Reporter
from sqlsentinel_ops.units import format_bytes, parse_seconds, parse_size

REPO = Path(__file__).resolve().parents[2]


class TestUnits:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("300MB", 300_000_000),
            ("1.5GiB", 1_610_612_736),
            ("512", 512),
            ("2 kB", 2000),
        ],
    )
    def test_sizes(self, text, expected):
        assert parse_size(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"), [("5s", 5.0), ("800ms", 0.8), ("2m", 120.0), ("3", 3.0)]
    )
    def test_durations(self, text, expected):
        assert parse_seconds(text) == pytest.approx(expected)

    @pytest.mark.parametrize("text", ["fast", "-1s", "0s", "5 lightyears"])
    def test_bad_durations_name_the_option(self, text):
        with pytest.raises(UsageProblem, match="--max-startup"):
            parse_seconds(text, "--max-startup")

    def test_bytes_are_shown_in_decimal_units(self):
        assert format_bytes(195_123_456) == "195.1 MB"


class TestBuildPlan:
    @pytest.fixture
    def context(self, tmp_path):
        (tmp_path / "sqlsentinel").mkdir()
        (tmp_path / "sqlsentinel" / "__init__.py").write_text("__version__ = '2.0.1'\n")
        (tmp_path / "Dockerfile").write_text("FROM scratch\n")
        return tmp_path

    def plan(self, context, **overrides):
        options = {
            "latest": False,
            "buildargs": {},
            "extra_labels": {},
            "nocache": False,
            "network": None,
            "pull": False,
        }
        return plan_build(
            context, "Dockerfile", "repo/sentinel", **{**options, **overrides}
        )

    def git(self, context, *args):
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
        }
        subprocess.run(
            ["git", "-C", str(context), *args], check=True, env=env, capture_output=True
        )

    def test_without_git_only_the_version_is_a_tag(self, context):
        plan = self.plan(context)

        assert plan.tags == ("repo/sentinel:2.0.1",)
        assert plan.request.labels["org.opencontainers.image.revision"] == "unknown"

    def test_git_revision_tag_labels_and_build_args(self, context):
        self.git(context, "init", "-q")
        self.git(
            context, "remote", "add", "origin", "https://user:tok@example.com/s.git"
        )
        self.git(context, "add", ".")
        self.git(context, "commit", "-q", "-m", "one")
        sha = subprocess.run(
            ["git", "-C", str(context), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

        plan = self.plan(context, latest=True, buildargs={"BASE_IMAGE": "base:1"})

        assert plan.tags == (
            "repo/sentinel:2.0.1",
            f"repo/sentinel:{sha}",
            "repo/sentinel:latest",
        )
        labels = plan.request.labels
        assert labels["org.opencontainers.image.source"] == "https://example.com/s.git"
        assert labels["org.opencontainers.image.base.name"] == "base:1"
        assert plan.request.buildargs["REVISION"] == sha
        assert plan.request.buildargs["VERSION"] == "2.0.1"

    def test_local_origin_sets_no_source(self, context, tmp_path_factory):
        """A clone of a local path has no URL anyone pulling the image could use."""
        upstream = tmp_path_factory.mktemp("upstream")
        self.git(context, "init", "-q")
        self.git(context, "remote", "add", "origin", str(upstream))

        plan = self.plan(context)

        assert "org.opencontainers.image.source" not in plan.request.labels
        assert "SOURCE" not in plan.request.buildargs

    @pytest.mark.parametrize(
        ("origin", "expected"),
        [
            (
                "git@example.com:team/sentinel.git",
                "https://example.com/team/sentinel.git",
            ),
            ("ssh://git@example.com:2222/team/s.git", "https://example.com/team/s.git"),
            ("git://example.com/s.git", "https://example.com/s.git"),
            ("https://example.com/a@b/s.git", "https://example.com/a@b/s.git"),
            ("/work/main", None),
            ("../upstream.git", None),
            ("file:///srv/git/s.git", None),
            ("C:\\src\\sentinel", None),
            ("", None),
        ],
    )
    def test_source_url_forms(self, origin, expected):
        assert source_url(origin) == expected

    def test_image_labels_leave_ops_keys_and_description_alone(self, context):
        """Containers inherit image labels; the Dockerfile owns the description."""
        labels = self.plan(context).request.labels

        assert not [k for k in labels if k.startswith("org.sqlsentinel.ops")]
        assert "org.opencontainers.image.description" not in labels

    @pytest.mark.parametrize(
        "key", ["org.sqlsentinel.ops", "org.sqlsentinel.ops.command"]
    )
    def test_reserved_label_keys_are_refused(self, context, key):
        with pytest.raises(UsageProblem, match=f"--label {key}: reserved"):
            self.plan(context, extra_labels={key: "1"})

    def test_uncommitted_changes_mark_the_revision_dirty(self, context):
        self.git(context, "init", "-q")
        self.git(context, "add", ".")
        self.git(context, "commit", "-q", "-m", "one")
        (context / "Dockerfile").write_text("FROM scratch\nLABEL changed=1\n")

        assert self.plan(context).revision.endswith("-dirty")

    def test_missing_version_names_the_file(self, context):
        (context / "sqlsentinel" / "__init__.py").write_text("VERSION = 1\n")

        with pytest.raises(UsageProblem, match=r"__init__.py: no __version__"):
            self.plan(context)


class TestBenchmarkFigures:
    def test_summary_of_five_runs(self):
        figures = summarize([1.0, 2.0, 3.0, 4.0, 10.0])

        assert figures == {
            "min": 1.0,
            "median": 3.0,
            "p95": pytest.approx(8.8),
            "max": 10.0,
        }

    def test_single_run(self):
        assert summarize([2.5]) == {"min": 2.5, "median": 2.5, "p95": 2.5, "max": 2.5}

    def test_last_record_skips_blank_lines_and_delta_is_signed(self, tmp_path):
        old = {
            "startup_seconds": {"median": 1.5, "p95": 2.0},
            "memory_bytes": {"median": 50_000_000},
        }
        new = {
            "startup_seconds": {"median": 1.25, "p95": 2.5},
            "memory_bytes": {"median": 52_000_000},
        }
        history = tmp_path / "h.jsonl"
        history.write_text(
            json.dumps({**old, "n": 1}) + "\n" + json.dumps(old) + "\n\n"
        )

        assert last_record(history) == old
        assert deltas(old, new) == {
            "startup_median_seconds": -0.25,
            "startup_p95_seconds": 0.5,
            "memory_median_bytes": 2_000_000,
        }

    @pytest.mark.parametrize(
        ("peak", "budget", "message"),
        [
            (53_841_920, 10_000_000, "memory 53.8 MB exceeds 10.0 MB"),
            (
                10_000_040,
                10_000_000,
                "memory 10.0 MB (10000040 B) exceeds 10.0 MB (10000000 B)",
            ),
        ],
    )
    def test_memory_budget_failure_in_mb(self, peak, budget, message):
        result = {
            "budgets": {"max_memory_bytes": float(budget)},
            "startup_seconds": {"p95": 1.0},
            "memory_bytes": {"max": peak},
        }

        assert budget_failures(result) == [message]

    def test_missing_history_is_no_history(self, tmp_path):
        assert last_record(tmp_path / "none.jsonl") is None


class TestOutput:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def test_terminal_gets_marks_and_tables(self, monkeypatch):
        monkeypatch.delenv("TERM", raising=False)
        stream = self.Terminal()
        reporter = Reporter("validate", False, stream)

        reporter.check("database", True, "ok")
        reporter.check("channels", None, "slow")
        reporter.table("sizes", ["layer", "size"], [["RUN pip", "70 MB"]])

        text = stream.getvalue()
        assert "✓ database" in text
        assert "! channels" in text
        assert "RUN pip" in text

    def test_logs_get_plain_stable_lines(self):
        stream = io.StringIO()
        reporter = Reporter("validate", False, stream)

        reporter.check("database", False, "down")
        reporter.table("sizes", ["layer", "size"], [["RUN pip", "70 MB"]])

        assert stream.getvalue().splitlines() == [
            "FAIL  database  down",
            "sizes",
            "  layer    size",
            "  RUN pip  70 MB",
        ]

    def test_registered_secrets_are_masked(self):
        from sqlsentinel.masking import register_secret

        register_secret("hunter2-registry")
        stream = io.StringIO()

        Reporter("push", False, stream).line("denied for hunter2-registry")

        assert "hunter2-registry" not in stream.getvalue()


class TestEntryPoint:
    def test_parser_errors_exit_2_with_json_when_asked(self, capsys):
        code = cli.run(["measure", "img", "--bogus", "--json"])

        captured = capsys.readouterr()
        assert code == ExitCode.USAGE
        document = json.loads(captured.out)
        assert document["error"]["kind"] == "usage"
        assert "--bogus" in document["error"]["message"]

    def test_help_imports_neither_docker_nor_rich_nor_httpx(self):
        """--help stays fast because the heavy libraries load inside commands."""
        code = (
            "import sys\n"
            "from sqlsentinel_ops.cli import run\n"
            "assert run(['--help']) == 0\n"
            "heavy = {'docker', 'rich', 'httpx', 'prometheus_client'}\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )

        assert done.stdout.strip().splitlines()[-1] == "[]"

    def test_unreachable_engine_is_one_sentence_and_exit_3(self, tmp_path):
        """Through the console script: no traceback, the address, exit code 3."""
        script = Path(sys.executable).with_name("sentinel-ops")
        env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/missing.sock"}

        done = subprocess.run(
            [str(script), "measure", "sqlsentinel:0", "--json"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )

        assert done.returncode == ExitCode.ENGINE_UNREACHABLE
        assert "Traceback" not in done.stderr
        assert done.stderr.startswith(f"error: The Docker engine at unix://{tmp_path}")
        assert json.loads(done.stdout)["error"]["kind"] == "engine_unreachable"

    def test_closed_tcp_port_is_unreachable_too(self, invoke, monkeypatch):
        from sqlsentinel_ops.containers import free_port

        monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{free_port()}")

        result = invoke("benchmark", "sqlsentinel:0")

        assert result.exit_code == ExitCode.ENGINE_UNREACHABLE
        assert "does not answer" in result.stderr

"""Checks of the deployment files that need no engine.

Compose templates go through Debian's `docker-compose config` (alone and in
the documented combinations), the Prometheus files through promtool, the
Grafana dashboard and the rules against the metrics a real `Metrics` registry
exposes, the example configurations through `sqlsentinel validate`, and the
build context and lock file through docker-py's own context rules.

docker-compose and promtool come from .ci/docker-setup.sh. Without them these
tests skip on a developer machine but fail under CI, where their absence is a
setup bug.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerkit import REPO

COMPOSE = REPO / "compose"
PROMETHEUS = COMPOSE / "prometheus"
DASHBOARD = COMPOSE / "grafana" / "dashboards" / "sqlsentinel.json"
DATASOURCE = COMPOSE / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
GUIDE = REPO / "docs" / "deployment" / "docker-guide.md"
ENV_EXAMPLE = COMPOSE / ".env.example"

TEMPLATES = [
    "docker-compose.yaml",
    "docker-compose.dev.yaml",
    "docker-compose.test.yaml",
    "docker-compose.monitoring.yaml",
]
# Each template alone, and each base with the monitoring overlay.
COMBINATIONS = [[name] for name in TEMPLATES] + [
    [base, "docker-compose.monitoring.yaml"] for base in TEMPLATES[:3]
]

# The exporter's metric families as the issue lists them.
DOCUMENTED_FAMILIES = {
    "sqlsentinel_alerts_total",
    "sqlsentinel_alert_duration_seconds",
    "sqlsentinel_notifications_total",
    "sqlsentinel_notification_duration_seconds",
    "sqlsentinel_notifications_owed",
    "sqlsentinel_scheduler_jobs",
    "sqlsentinel_uptime_seconds",
    "sqlsentinel_alert_last_run_timestamp_seconds",
    "sqlsentinel_alert_last_success_timestamp_seconds",
    "sqlsentinel_alert_state",
    "sqlsentinel_executions_skipped_total",
    "sqlsentinel_config_reloads_total",
    "sqlsentinel_config_last_reload_success_timestamp_seconds",
    "sqlsentinel_build_info",
}
PROMETHEUS_SYNTHETIC = {"up"}  # made by Prometheus for every target, not exported
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


def tool(name: str) -> str:
    """The path of a command-line tool, or a skip (a failure under CI)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (run .ci/docker-setup.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def compose_config(
    files: list[str],
    env_file: Path | None = ENV_EXAMPLE,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    command = [tool("docker-compose")]
    for name in files:
        command += ["-f", str(COMPOSE / name)]
    if env_file is not None:
        command += ["--env-file", str(env_file)]
    return subprocess.run(
        [*command, "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**_clean_env(), **(env or {})},
    )


def _clean_env() -> dict[str, str]:
    """The environment minus the variables the templates read: only tests set them."""
    names = set(
        re.findall(
            r"\$\{([A-Z_][A-Z0-9_]*)",
            "".join((COMPOSE / name).read_text(encoding="utf-8") for name in TEMPLATES),
        )
    )
    return {k: v for k, v in os.environ.items() if k not in names}


# ---------------------------------------------------------------------------
# Compose


@pytest.mark.parametrize("files", COMBINATIONS, ids=lambda f: "+".join(f))
def test_compose_config_accepts(files: list[str]) -> None:
    result = compose_config(files)
    assert result.returncode == 0, result.stderr
    merged = yaml.safe_load(result.stdout)
    assert merged["services"], result.stdout


@pytest.mark.parametrize("name", TEMPLATES)
def test_templates_follow_the_compose_specification(name: str) -> None:
    data = yaml.safe_load((COMPOSE / name).read_text(encoding="utf-8"))
    assert "version" not in data, "the Compose Specification has no version key"


def test_production_template_is_hardened() -> None:
    result = compose_config(["docker-compose.yaml"])
    assert result.returncode == 0, result.stderr
    service = yaml.safe_load(result.stdout)["services"]["sqlsentinel"]
    assert service["restart"] == "unless-stopped"
    assert service["read_only"] is True
    assert any(mount.startswith("/tmp") for mount in service["tmpfs"])  # noqa: S108
    assert service["stop_grace_period"] == "45s"
    assert service["healthcheck"]["test"][1:3] == [
        "/opt/venv/bin/sqlsentinel",
        "healthcheck",
    ]
    assert service["logging"]["options"] == {"max-size": "10m", "max-file": "5"}
    assert service["mem_limit"] and service["cpus"] and service["pids_limit"]
    assert service["cap_drop"] == ["ALL"]
    assert service["secrets"] == [{"source": "db_password"}]
    assert all(port.startswith("127.0.0.1:") for port in service["ports"])


def test_production_template_names_a_missing_setting() -> None:
    result = compose_config(
        ["docker-compose.yaml"], env_file=None, env={"GRAFANA_ADMIN_PASSWORD": "x"}
    )
    assert result.returncode != 0
    assert "set DB_HOST in compose/.env" in result.stderr


def test_dev_template_mounts_source_and_reloads() -> None:
    result = compose_config(["docker-compose.dev.yaml"])
    service = yaml.safe_load(result.stdout)["services"]["sqlsentinel"]
    assert "watchfiles" in service["entrypoint"]
    assert service["build"]["args"]["DEV_PACKAGES"] == "watchfiles"
    assert service["environment"]["SQLSENTINEL_LOG_FORMAT"] == "text"
    assert service["environment"]["SQLSENTINEL_LOG_LEVEL"] == "debug"
    assert any(v.endswith(":/src/sqlsentinel:ro") for v in service["volumes"])


def test_test_template_waits_for_a_healthy_database() -> None:
    result = compose_config(["docker-compose.test.yaml"])
    services = yaml.safe_load(result.stdout)["services"]
    assert (
        services["sqlsentinel"]["depends_on"]["postgres"]["condition"]
        == "service_healthy"
    )
    assert (
        services["verify"]["depends_on"]["sqlsentinel"]["condition"]
        == "service_healthy"
    )
    seed = services["postgres"]["volumes"][0]
    assert seed.endswith(":/docker-entrypoint-initdb.d/01-seed.sql:ro")


def test_secret_files_come_from_the_host_dir_setting(tmp_path: Path) -> None:
    """The host folder has its own name; the in-container one does not move it."""
    moved = compose_config(
        ["docker-compose.yaml"], env={"SQLSENTINEL_SECRETS_HOST_DIR": str(tmp_path)}
    )
    container_dir = compose_config(
        ["docker-compose.yaml"], env={"SQLSENTINEL_SECRETS_DIR": "/run/elsewhere"}
    )
    assert moved.returncode == 0 and container_dir.returncode == 0, moved.stderr
    secret = yaml.safe_load(moved.stdout)["secrets"]["db_password"]
    assert secret["file"] == str(tmp_path / "db_password")
    default = yaml.safe_load(container_dir.stdout)["secrets"]["db_password"]
    assert default["file"] == str(COMPOSE / "secrets" / "db_password")


def _container_variables() -> set[str]:
    """The variables the guide documents as read inside the container."""
    section = GUIDE.read_text(encoding="utf-8").split("### Configuration by env")[1]
    table = section.split("\n\n")[2]
    return set(re.findall(r"^\| `(SQLSENTINEL_[A-Z_]+)`", table, re.MULTILINE))


def test_compose_uses_container_variable_names_only_for_the_container() -> None:
    """A name the image reads may only be passed on to the same variable."""
    inside = _container_variables()
    assert {"SQLSENTINEL_SECRETS_DIR", "SQLSENTINEL_STATE_DB"} <= inside
    for name in TEMPLATES:
        text = (COMPOSE / name).read_text(encoding="utf-8")
        for line in text.splitlines():
            for used in re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", line):
                if used in inside:
                    assert line.strip().startswith(f"{used}: ${{{used}"), (
                        f"{name}: {used} means the container's setting: {line}"
                    )


def _documented_compose_commands() -> list[list[str]]:
    """The -f file lists of every docker-compose command in the deployment guide."""
    commands = []
    text = GUIDE.read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("docker-compose "):
            files = re.findall(r"-f\s+compose/(\S+)", line)
            if files:
                commands.append(files)
    return commands


def test_every_compose_command_in_the_guide_validates() -> None:
    documented = _documented_compose_commands()
    assert len(documented) >= 5
    for files in documented:
        assert files in COMBINATIONS, f"guide uses an untested combination: {files}"
        result = compose_config(files)
        assert result.returncode == 0, f"{files}: {result.stderr}"


# ---------------------------------------------------------------------------
# Prometheus


def test_promtool_check_config() -> None:
    result = subprocess.run(
        [tool("promtool"), "check", "config", "prometheus.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROMETHEUS,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_promtool_check_rules() -> None:
    rules = sorted(str(p) for p in (PROMETHEUS / "rules").glob("*.yml"))
    result = subprocess.run(
        [tool("promtool"), "check", "rules", *rules],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests() -> None:
    result = subprocess.run(
        [tool("promtool"), "test", "rules", "tests/sqlsentinel.test.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROMETHEUS,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_the_compose_service() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "sqlsentinel")
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["sqlsentinel:8080"]


# ---------------------------------------------------------------------------
# Metric names used by the dashboard and the rules


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions and labels left out)."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr
    )
    expr = re.sub(r"\$\w+", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", expr):
        if expr[match.end() :].lstrip().startswith("("):
            continue  # a function
        if match.group().lower() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def test_metric_name_parser() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, alert_name) "
        '(rate(sqlsentinel_alert_duration_seconds_bucket{job="x", a=~"$i"}[5m]))) '
        "/ clamp_min(sum(rate(up[1m])), 1e-9) > 0.5 unless on (instance) foo_total"
    )
    assert metric_names(expr) == {
        "sqlsentinel_alert_duration_seconds_bucket",
        "up",
        "foo_total",
    }


def _family(sample_name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        if sample_name.endswith(suffix):
            return sample_name.removesuffix(suffix)
    return sample_name


@pytest.fixture(scope="module")
def exposed() -> set[str]:
    """Sample names of a real Metrics registry with every labelled series in use."""
    from sqlsentinel.metrics import Metrics

    metrics = Metrics(version="0.0.0-test")
    metrics.set_alerts(["orders"])
    metrics.set_channels(["ops"])
    metrics.execution_finished("orders", "alert", "ALERT", 0.2, time.time(), True)
    metrics.execution_skipped("orders")
    metrics.notification_delivered("ops", False, 0.1)
    metrics.set_owed({"ops": 1})
    metrics.set_scheduler_jobs(1)
    metrics.config_loaded()
    metrics.config_reloaded(False)
    names = {s.name for family in metrics.registry.collect() for s in family.samples}
    assert names, "the registry exposes nothing"
    return names


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]["query"]
        match = re.match(r"label_values\(([^,]+),", query)
        exprs.append(match.group(1) if match else query)
    return exprs


def _rule_exprs() -> list[str]:
    exprs = []
    for path in (PROMETHEUS / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            exprs += [rule["expr"] for rule in group["rules"]]
    return exprs


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_queried_metrics_exist(source: str, exposed: set[str]) -> None:
    exprs = _dashboard_exprs() if source == "dashboard" else _rule_exprs()
    used = set().union(*(metric_names(e) for e in exprs)) - PROMETHEUS_SYNTHETIC
    assert used
    assert used - exposed == set(), "queried but not exposed by sqlsentinel.metrics"
    ours = {_family(name) for name in used if name.startswith("sqlsentinel_")}
    assert ours - DOCUMENTED_FAMILIES == set(), "not in the documented metric list"


def test_dashboard_covers_what_operators_need() -> None:
    exprs = "\n".join(_dashboard_exprs())
    for needle in (
        "sqlsentinel_alerts_total",  # executions
        'status="error"',  # errors
        "sqlsentinel_alert_duration_seconds_bucket",  # durations
        'status="failure"',  # notification failures
        "sqlsentinel_notifications_owed",  # owed notifications
        "sqlsentinel_scheduler_jobs",  # scheduler
    ):
        assert needle in exprs


def test_dashboard_uses_the_provisioned_datasource() -> None:
    uid = yaml.safe_load(DATASOURCE.read_text(encoding="utf-8"))["datasources"][0][
        "uid"
    ]
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert "__inputs" not in dashboard
    assert "${DS_" not in DASHBOARD.read_text(encoding="utf-8")
    refs: list[Any] = [
        p["datasource"] for p in dashboard["panels"] if "datasource" in p
    ]
    refs += [t["datasource"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert refs and all(ref == {"type": "prometheus", "uid": uid} for ref in refs)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# ---------------------------------------------------------------------------
# Example configurations, entrypoint, build context, lock file


def _validate(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sqlsentinel", "validate", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_production_example_config_is_valid() -> None:
    env = {
        "DB_USER": "u",
        "DB_PASSWORD": "p",
        "DB_HOST": "db.example.com",
        "DB_NAME": "app",
        "ALERT_WEBHOOK_URL": "https://hooks.example.com/x",
        "ALERT_WEBHOOK_TOKEN": "t",
    }
    result = _validate(COMPOSE / "config" / "alerts.yaml", env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_test_template_config_is_valid() -> None:
    result = _validate(COMPOSE / "test" / "alerts.yaml", {"TEST_DB_PASSWORD": "x"})
    assert result.returncode == 0, result.stdout + result.stderr


def test_entrypoint_exports_secret_files(tmp_path: Path) -> None:
    """The entrypoint turns /run/secrets-style files into variables the config reads."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "db_password").write_text("from-file\n", encoding="utf-8")
    (secrets / "not-a.valid name").write_text("ignored", encoding="utf-8")
    config = tmp_path / "alerts.yaml"
    config.write_text(
        'database: {url: "sqlite:///${DB_PASSWORD}.db"}\n'
        "alerts: [{name: a, interval: 1m, query: \"SELECT 'OK' AS status\"}]\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if k != "DB_PASSWORD"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["SQLSENTINEL_SECRETS_DIR"] = str(secrets)
    entrypoint = str(REPO / "docker" / "entrypoint.sh")
    ok = subprocess.run(
        ["sh", entrypoint, "validate", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    (secrets / "db_password").unlink()
    missing = subprocess.run(
        ["sh", entrypoint, "validate", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert missing.returncode == 2
    assert "DB_PASSWORD is not set" in missing.stdout + missing.stderr


def test_build_context_is_an_allow_list() -> None:
    from docker.utils.build import exclude_paths

    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sent = set(exclude_paths(str(REPO), patterns, dockerfile="Dockerfile"))
    outside_package = {p for p in sent if not p.startswith("sqlsentinel/")} - {
        "sqlsentinel"
    }
    assert outside_package == {
        ".dockerignore",
        "Dockerfile",
        "README.md",
        "pyproject.toml",
        "requirements/lock.txt",
        "docker/entrypoint.sh",
        "docker/check-compiled.py",
    }
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in sent)
    assert "sqlsentinel/cli.py" in sent


def test_dockerfile_works_with_the_classic_builder() -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert not re.search(r"^\s*#\s*syntax\s*=", text, re.MULTILINE)
    text = "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")
    )
    assert "--mount" not in text
    assert not re.search(r"<<-?\s*['\"]?[A-Z]+", text), "heredocs need BuildKit"
    assert "--start-interval" not in text, "Engines before 25 reject it"
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.MULTILINE)
    assert text.count("FROM ${BASE_IMAGE}") == 2


def _requirement_name(spec: str) -> str:
    return re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_lock_pins_every_dependency() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"
    ]
    wanted = {_requirement_name(s) for s in project["dependencies"]}
    for extra in ("postgresql", "mysql", "duckdb", "bigquery", "snowflake"):
        wanted |= {
            _requirement_name(s) for s in project["optional-dependencies"][extra]
        }
    wanted |= {"hatchling", "watchfiles"}
    pins = {}
    for line in (
        (REPO / "requirements" / "lock.txt").read_text(encoding="utf-8").splitlines()
    ):
        if line and not line.startswith(("#", " ")):
            name, _, version = line.split(";")[0].split("#")[0].strip().partition("==")
            assert version, f"not pinned: {line}"
            pins[name.lower().replace("_", "-")] = version
    assert wanted - set(pins) == set(), "run requirements/refresh.sh"

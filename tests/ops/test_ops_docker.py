"""sentinel-ops against the real Docker engine and real registries on loopback.

Everything these tests create carries the session's run label and is removed at the
end (tests/ops/conftest.py); pushed manifests are deleted from the registries.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from sqlsentinel_ops.build import git_source
from sqlsentinel_ops.containers import example_config, sentinel_container
from sqlsentinel_ops.engine import connect
from sqlsentinel_ops.errors import ExitCode

pytestmark = pytest.mark.docker

SCRIPT = Path(sys.executable).with_name("sentinel-ops")
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
REPO = Path(__file__).resolve().parents[2]


def documented_leftover_label() -> str:
    """The label key docs/operations/sentinel-ops.md tells users to clean up by."""
    doc = (REPO / "docs" / "operations" / "sentinel-ops.md").read_text()
    keys = set(re.findall(r"docker ps -aq? --filter label=([\w.-]+)", doc))
    assert len(keys) == 1, keys
    return keys.pop()


def registry_digest(registry, repository: str, tag: str) -> str:
    """The digest the registry itself reports for a tag."""
    auth = (registry.user, registry.password) if registry.user else None
    response = httpx.head(
        f"http://{registry.address}/v2/{repository}/manifests/{tag}",
        headers={"Accept": MANIFEST},
        auth=auth,
        trust_env=False,
    )
    response.raise_for_status()
    return response.headers["Docker-Content-Digest"]


def delete_manifest(registry, repository: str, digest: str) -> None:
    """Remove what a test pushed."""
    auth = (registry.user, registry.password) if registry.user else None
    httpx.delete(
        f"http://{registry.address}/v2/{repository}/manifests/{digest}",
        auth=auth,
        trust_env=False,
    )


class TestBuild:
    def test_build_tags_labels_and_reports_the_image(self, built_image, docker_client):
        image = docker_client.images.get(built_image["image_id"])

        assert built_image["ok"] is True
        assert sorted(image.tags) == sorted(built_image["tags"])
        assert built_image["tags"][0].endswith(":" + built_image["version"])
        assert image.attrs["Size"] == built_image["size_bytes"]
        labels = image.labels
        assert labels["org.opencontainers.image.version"] == built_image["version"]
        assert labels["org.opencontainers.image.created"].startswith("20")
        assert labels["org.opencontainers.image.base.name"]
        assert "org.sqlsentinel.ops" not in labels
        # The Dockerfile's description stands; source is a URL or the default.
        dockerfile = (REPO / "Dockerfile").read_text()
        description = re.search(r'image\.description="([^"]+)"', dockerfile)
        assert description is not None
        assert labels["org.opencontainers.image.description"] == description[1]
        source = git_source(REPO) or "unknown"
        assert labels["org.opencontainers.image.source"] == source

    def test_build_leftover_filter_skips_user_containers_of_the_image(
        self, built_image, run_label, docker_client
    ):
        """A user's own container of a built image is no leftover to remove."""
        key, value = run_label.split("=")
        selector = {"label": [documented_leftover_label(), run_label]}
        mine = docker_client.containers.create(
            built_image["image_id"], labels={key: value}
        )
        try:
            with sentinel_container(
                connect(),
                built_image["image_id"],
                purpose="test",
                network="host",
                config=example_config(),
                labels={key: value},
            ) as running:
                found = docker_client.containers.list(all=True, filters=selector)
        finally:
            mine.remove(force=True)

        assert [c.name for c in found] == [running.container.name]

    def test_failing_step_fails_the_build(
        self, invoke, base_image, run_label, tmp_path
    ):
        (tmp_path / "sqlsentinel").mkdir()
        (tmp_path / "sqlsentinel" / "__init__.py").write_text('__version__ = "0.0.1"\n')
        (tmp_path / "Dockerfile").write_text(
            f"FROM {base_image}\nRUN echo about to fail && exit 3\n"
        )

        result = invoke(
            "build",
            str(tmp_path),
            "--repository",
            f"sentinel-ops-bad-{uuid.uuid4().hex[:6]}",
            "--network",
            "host",
            "--label",
            run_label,
            "--json",
        )

        assert result.exit_code == ExitCode.CHECK_FAILED
        error = result.document["error"]
        # The engine counts the LABEL steps it appends for --label, hence not 2/2.
        assert error["step"].startswith("Step 2/")
        assert error["step"].endswith(" : RUN echo about to fail && exit 3")
        assert "returned a non-zero code: 3" in error["message"]
        assert "about to fail" in result.stderr


class TestRunningImage:
    def test_test_command_passes_every_step(
        self, invoke, built_image, run_label, docker_client
    ):
        result = invoke(
            "test",
            built_image["tags"][0],
            "--network",
            "host",
            "--label",
            run_label,
            "--json",
        )

        assert result.exit_code == 0, result.stderr
        names = [step["name"] for step in result.document["steps"] if step["ok"]]
        assert "an alert executed" in names
        assert "SIGTERM stops it with exit code 0" in names
        left = docker_client.containers.list(all=True, filters={"label": run_label})
        assert left == []

    def test_validate_by_container_name(self, invoke, built_image, run_label):
        engine = connect()
        key, value = run_label.split("=")
        with sentinel_container(
            engine,
            built_image["image_id"],
            purpose="validate",
            network="host",
            config=example_config(),
            labels={key: value},
        ) as running:
            running.start()
            from sqlsentinel_ops.probes import wait_healthy

            with httpx.Client(trust_env=False) as client:
                wait_healthy(client, running.base_url, 60)
            result = invoke("validate", running.container.name, "--json")

        assert result.exit_code == 0, result.stderr
        assert result.document["status"] == "healthy"
        statuses = {c: v["status"] for c, v in result.document["components"].items()}
        expected = {
            "database": "healthy",
            "scheduler": "healthy",
            "notifications": "healthy",
        }
        assert statuses.items() >= expected.items()

    def test_validate_names_a_stopped_container(
        self, invoke, built_image, run_label, docker_client
    ):
        container = docker_client.containers.create(
            built_image["image_id"],
            labels={run_label.split("=")[0]: run_label.split("=")[1]},
        )
        try:
            result = invoke("validate", container.name)
        finally:
            container.remove(force=True)

        assert result.exit_code == ExitCode.CHECK_FAILED
        assert f"Container {container.name} is not running (created" in result.stderr

    def test_benchmark_reports_figures_and_compares_with_history(
        self, invoke, built_image, run_label, tmp_path
    ):
        history = tmp_path / "bench.jsonl"
        args = [
            "benchmark",
            built_image["tags"][0],
            "--network",
            "host",
            "--label",
            run_label,
            "--history",
            str(history),
            "--json",
        ]

        first = invoke(*args, "--runs", "2", "--max-startup", "5s")
        second = invoke(*args, "--runs", "1", "--max-startup", "1ms")

        assert first.exit_code == 0, first.stderr
        startup = first.document["startup_seconds"]
        print(
            "benchmark startup seconds:",
            startup,
            "memory:",
            first.document["memory_bytes"],
        )
        assert (
            0 < startup["min"] <= startup["median"] <= startup["p95"] <= startup["max"]
        )
        assert first.document["memory_bytes"]["min"] > 1_000_000
        assert second.exit_code == ExitCode.CHECK_FAILED
        assert second.document["failures"][0].startswith("startup p95")
        assert second.document["delta"] is not None
        assert len(history.read_text().splitlines()) == 2


class TestMeasure:
    def test_size_layers_and_budget(self, invoke, built_image, base_image):
        within = invoke(
            "measure", built_image["tags"][0], "--max-size", "300MB", "--json"
        )
        over = invoke("measure", built_image["tags"][0], "--max-size", "1MB")

        document = within.document
        print("measure:", document["size_bytes"], "base share:", document["base_share"])
        assert within.exit_code == 0
        assert document["size_bytes"] == built_image["size_bytes"]
        sizes = [layer["size_bytes"] for layer in document["layers"]]
        assert sizes == sorted(sizes, reverse=True)
        assert document["base_image"] == base_image
        assert 0 < document["base_share"] < 1
        assert over.exit_code == ExitCode.CHECK_FAILED
        assert "FAIL  size budget 1.0 MB" in over.stdout


class TestMissingImage:
    @pytest.mark.parametrize("command", ["test", "measure", "benchmark", "push"])
    def test_missing_image_exit_4(self, invoke, docker_client, command):
        result = invoke(command, "sentinel-ops-does-not-exist:0", "--json")

        assert result.exit_code == ExitCode.IMAGE_NOT_FOUND, result.stderr
        assert "sentinel-ops-does-not-exist:0" in result.document["error"]["message"]


class TestPush:
    def test_all_tags_to_open_registry_match_registry_digests(
        self, invoke, built_image, open_registry
    ):
        """Every tag the build made lands in the registry with the reported digest."""
        repository = f"sentinel-ops-it-{uuid.uuid4().hex[:6]}"
        name = built_image["tags"][0].rsplit(":", 1)[0]

        result = invoke(
            "push",
            name,
            "--all-tags",
            "--registry",
            open_registry.address,
            "--name",
            repository,
            "--json",
        )

        assert result.exit_code == 0, result.stderr
        pushed = {
            p["ref"].rsplit(":", 1)[1]: p["digest"] for p in result.document["pushed"]
        }
        tags = [ref.rsplit(":", 1)[1] for ref in built_image["tags"]]
        assert sorted(pushed) == sorted(tags)
        for tag, digest in pushed.items():
            assert digest == registry_digest(open_registry, repository, tag)
        for digest in set(pushed.values()):
            delete_manifest(open_registry, repository, digest)

    def test_push_with_env_credentials(self, invoke, built_image, auth_registry):
        repository = f"sentinel-ops-it-{uuid.uuid4().hex[:6]}"
        env = {
            "SENTINEL_OPS_REGISTRY_USER": auth_registry.user,
            "SENTINEL_OPS_REGISTRY_PASSWORD": auth_registry.password,
        }

        result = invoke(
            "push",
            built_image["tags"][0],
            "--registry",
            auth_registry.address,
            "--name",
            repository,
            "--json",
            env=env,
        )

        assert result.exit_code == 0, result.stderr
        digest = result.document["pushed"][0]["digest"]
        assert digest == registry_digest(
            auth_registry, repository, built_image["version"]
        )
        assert auth_registry.password not in result.stdout + result.stderr
        delete_manifest(auth_registry, repository, digest)

    def test_wrong_password_from_stdin_fails_and_stays_secret(
        self, built_image, auth_registry
    ):
        """Through the console script, as CI runs it: exit 1, the reason, no secret."""
        wrong = f"wrong-{uuid.uuid4().hex}"

        done = subprocess.run(
            [
                str(SCRIPT),
                "push",
                built_image["tags"][0],
                "--registry",
                auth_registry.address,
                "--username",
                auth_registry.user,
                "--password-stdin",
                "--json",
            ],
            input=wrong + "\n",
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "TERM": "dumb"},
        )

        assert done.returncode == ExitCode.CHECK_FAILED
        document = json.loads(done.stdout)
        assert "unauthorized" in document["error"]["message"]
        assert wrong not in done.stdout + done.stderr

    def test_no_credentials_against_auth_registry_fails(
        self, invoke, built_image, auth_registry, monkeypatch
    ):
        monkeypatch.setenv("DOCKER_CONFIG", "/nonexistent-docker-config")

        result = invoke(
            "push", built_image["tags"][0], "--registry", auth_registry.address
        )

        assert result.exit_code == ExitCode.CHECK_FAILED
        assert "failed" in result.stderr


class TestConsoleScript:
    def test_measure_json_through_the_console_script(self, built_image):
        """stdout is exactly one JSON document; the human lines are on stderr."""
        done = subprocess.run(
            [str(SCRIPT), "measure", built_image["tags"][0], "--json"],
            capture_output=True,
            text=True,
            check=False,
        )

        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["command"] == "measure"
        assert "size (uncompressed)" in done.stderr

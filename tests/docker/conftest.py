"""Fixtures for the Docker tests: the engine, the image build and labelled cleanup.

The engine and the stand-in base image come from .ci/docker-setup.sh, which
prints the base image tag; .ci/run exports it as SQLSENTINEL_DOCKER_BASE_IMAGE.
Set but empty means the setup could not start an engine: every Docker test then
skips with that reason (and one loud line at the end of the run). Unset, the
tests use the stand-in tag if the engine already has it.

Everything the tests create (images, containers, volumes) carries the label
``sqlsentinel.test=<run id>`` and is removed by that label at the end of the
session, even when a test failed half-way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from dockerkit import (
    BASE_ENV,
    RUN_ID,
    SESSION_START,
    STAND_IN_BASE,
    TEST_LABEL,
    BuiltImage,
    build_image,
)

_skip_reasons: list[str] = []
# Builder-stage images of this session's builds, removed at the end.
BUILDER_STAGES: list[str] = []


def _skip(reason: str) -> None:
    if reason not in _skip_reasons:
        _skip_reasons.append(reason)
    pytest.skip(reason)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say once, loudly, why the Docker tests did not run."""
    for reason in _skip_reasons:
        terminalreporter.write_line(
            f"!!! DOCKER TESTS SKIPPED: {reason}", red=True, bold=True
        )


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A docker-py client talking to a live engine, or a skip saying why not."""
    if os.environ.get(BASE_ENV) == "":
        _skip(
            f"{BASE_ENV} is empty: .ci/docker-setup.sh could not start an engine "
            "(see its output)"
        )
    import docker  # the ops extra; imported here so collection works without it

    try:
        # version="auto": the engine here speaks API 1.41, older than the default.
        client = docker.from_env(version="auto", timeout=300)
        client.ping()
    except Exception as exc:
        _skip(f"no Docker engine answers ({exc.__class__.__name__}: {exc})")
    yield client
    remove_labelled(client)
    client.close()


def remove_labelled(client: Any) -> None:
    """Remove this run's containers, volumes and images (by label)."""
    selector = {"label": f"{TEST_LABEL}={RUN_ID}"}
    for container in client.containers.list(all=True, filters=selector):
        container.remove(force=True, v=True)
    for volume in client.volumes.list(filters=selector):
        volume.remove(force=True)
    for image in client.images.list(filters=selector):
        client.images.remove(image.id, force=True)
    for image_id in BUILDER_STAGES:
        _remove_if_made_by_this_run(client, image_id)


def _remove_if_made_by_this_run(client: Any, image_id: str) -> None:
    """Remove an unlabelled builder-stage image unless older than the run or shared."""
    import docker.errors

    try:
        created = client.api.inspect_image(image_id)["Created"]
        made = datetime.fromisoformat(created[:26].rstrip("Z") + "+00:00").timestamp()
        if made >= SESSION_START - 1:
            # No force: the engine refuses while another image builds on it.
            client.images.remove(image_id)
    except docker.errors.APIError:
        pass  # gone already, or a parent of someone else's image: leave it


@pytest.fixture(scope="session")
def base_image(docker_client: Any) -> str:
    """The base image tag for BASE_IMAGE: from docker-setup.sh, else the stand-in."""
    import docker.errors

    tag = os.environ.get(BASE_ENV) or STAND_IN_BASE
    try:
        docker_client.images.get(tag)
    except docker.errors.ImageNotFound:
        _skip(f"base image {tag} is not in the engine: run .ci/docker-setup.sh first")
    return tag


@pytest.fixture(scope="session")
def register_build() -> Callable[[BuiltImage], None]:
    """Remember a build's builder-stage image for the end-of-session cleanup."""

    def register(built: BuiltImage) -> None:
        if built.builder_id:
            BUILDER_STAGES.append(built.builder_id)

    return register


@pytest.fixture(scope="session")
def sentinel_image(
    docker_client: Any, base_image: str, register_build: Callable[[BuiltImage], None]
) -> BuiltImage:
    """The production image, built once per session from the working tree."""
    built = build_image(docker_client, base_image, f"sqlsentinel-test:{RUN_ID}")
    register_build(built)
    print(f"\n[docker] image {built.tag} built in {built.build_seconds:.1f} s")
    return built

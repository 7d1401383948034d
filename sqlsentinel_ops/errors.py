"""Exit codes and the errors that map to them: the contract CI pipelines rely on."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Process exit status of every sentinel-ops command."""

    OK = 0
    CHECK_FAILED = 1
    USAGE = 2
    ENGINE_UNREACHABLE = 3
    IMAGE_NOT_FOUND = 4
    INTERRUPTED = 130


class OpsError(Exception):
    """Base of every error sentinel-ops reports as one sentence and an exit code."""

    exit_code = ExitCode.CHECK_FAILED
    kind = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class CheckFailed(OpsError):
    """Raised when a build, push, check or budget fails."""

    kind = "check_failed"


class UsageProblem(OpsError):
    """Raised when options or inputs are wrong (a bad size, a missing file)."""

    exit_code = ExitCode.USAGE
    kind = "usage"


class EngineUnavailable(OpsError):
    """Raised when the Docker engine cannot be reached."""

    exit_code = ExitCode.ENGINE_UNREACHABLE
    kind = "engine_unreachable"


class ImageNotFound(OpsError):
    """Raised when the image (or container) named on the command line does not exist."""

    exit_code = ExitCode.IMAGE_NOT_FOUND
    kind = "image_not_found"


class ContainerNotFound(ImageNotFound):
    """Raised when the container named on the command line does not exist."""

    kind = "container_not_found"

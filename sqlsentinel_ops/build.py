"""`build`: the image, with live output, version and revision tags, and OCI labels."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlsentinel.masking import mask
from sqlsentinel_ops.engine import RESERVED_LABELS, BuildRequest, Engine
from sqlsentinel_ops.errors import CheckFailed, UsageProblem
from sqlsentinel_ops.output import Reporter

_VERSION = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)
_STEP = re.compile(r"^Step \d+/\d+ : ")
# Remote forms git accepts that name a host: ssh://, git://, git+ssh:// URLs and
# the scp-like user@host:path. The host needs two characters, unlike C:\path.
_REMOTE_URL = re.compile(
    r"^(?:ssh|git|git\+ssh)://"  # scheme
    r"(?:[^/@]*@)?([^/:]+)(?::\d*)?/(.+)$"  # [user@]host[:port]/path
)
_SCP_LIKE = re.compile(r"^(?:[^/@:]+@)?([^/:]{2,}):(?!//)([^\\].*)$")


@dataclass(frozen=True)
class BuildPlan:
    """The tags, build args and labels one build will use."""

    repository: str
    version: str
    revision: str | None
    tags: tuple[str, ...]
    request: BuildRequest


@dataclass(frozen=True)
class BuildResult:
    """What a finished build produced."""

    image_id: str
    tags: tuple[str, ...]
    size: int
    seconds: float


def read_version(context: Path) -> str:
    """The version in sqlsentinel/__init__.py of the build context."""
    init = context / "sqlsentinel" / "__init__.py"
    try:
        match = _VERSION.search(init.read_text(encoding="utf-8"))
    except OSError:
        raise UsageProblem(
            f"{init}: cannot be read; is {context} the repository root?"
        ) from None
    if match is None:
        raise UsageProblem(f"{init}: no __version__ = '...' line")
    return match.group(1)


def git_revision(context: Path) -> str | None:
    """The short commit id of the context, with -dirty for uncommitted changes."""
    sha = _git(context, "rev-parse", "--short=12", "HEAD")
    if not sha:
        return None
    status = _git(context, "status", "--porcelain", "--untracked-files=no")
    return f"{sha}-dirty" if status else sha


def git_source(context: Path) -> str | None:
    """The origin as a web URL for the source label; None for a local path."""
    return source_url(_git(context, "config", "--get", "remote.origin.url"))


def source_url(origin: str) -> str | None:
    """An https URL without credentials for a remote origin, else None."""
    if re.match(r"^https?://", origin):
        return re.sub(r"^(https?://)[^/@]*@", r"\1", origin)
    match = _REMOTE_URL.match(origin) or _SCP_LIKE.match(origin)
    if match is None:
        # A local path or file:// URL: meaningless to anyone pulling the image.
        return None
    host, path = match.groups()
    return f"https://{host}/{path.lstrip('/')}"


def _git(context: Path, *args: str) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - fixed git arguments, no shell
            ["git", "-C", str(context), *args],  # noqa: S607 - git from PATH, as developers run it
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def plan_build(
    context: Path,
    dockerfile: str,
    repository: str,
    *,
    latest: bool,
    buildargs: dict[str, str],
    extra_labels: dict[str, str],
    nocache: bool,
    network: str | None,
    pull: bool,
) -> BuildPlan:
    """Decide tags and labels from the context's version and git revision."""
    if not (context / dockerfile).is_file():
        raise UsageProblem(f"{context / dockerfile}: no such Dockerfile")
    version = read_version(context)
    revision = git_revision(context)
    names = [
        version,
        *([revision] if revision else []),
        *(["latest"] if latest else []),
    ]
    tags = tuple(f"{repository}:{name}" for name in names)
    reserved = sorted(set(extra_labels) & set(RESERVED_LABELS))
    if reserved:
        raise UsageProblem(
            f"--label {reserved[0]}: reserved for containers sentinel-ops starts"
        )
    source = git_source(context)
    labels = {
        **oci_labels(version, revision, source, buildargs.get("BASE_IMAGE")),
        **extra_labels,
    }
    # The Dockerfile's own ARGs for its labels; `created` only goes in the API
    # labels, applied after the last step, so it never invalidates the cache.
    stamped = {"VERSION": version, "REVISION": revision or "unknown"}
    if source:
        stamped["SOURCE"] = source
    request = BuildRequest(
        context,
        dockerfile,
        tags[0],
        {**stamped, **buildargs},
        labels,
        nocache,
        network,
        pull,
    )
    return BuildPlan(repository, version, revision, tags, request)


def oci_labels(
    version: str, revision: str | None, source: str | None, base: str | None
) -> dict[str, str]:
    """The org.opencontainers.image.* labels for this build.

    No description: the Dockerfile's own description label stands.
    """
    labels = {
        "org.opencontainers.image.title": "SQL Sentinel",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.revision": revision or "unknown",
        "org.opencontainers.image.created": datetime.now(UTC).isoformat(
            timespec="seconds"
        ),
        "org.opencontainers.image.licenses": "MIT",
    }
    if source:
        labels["org.opencontainers.image.source"] = source
    if base:
        labels["org.opencontainers.image.base.name"] = base
    return labels


def run_build(engine: Engine, plan: BuildPlan, view: BuildView) -> BuildResult:
    """Build, stream the output to ``view``, tag, and describe the image."""
    started = time.monotonic()
    image_id = None
    for chunk in engine.build(plan.request):
        image_id = view.chunk(chunk) or image_id
    if image_id is None:
        raise CheckFailed("The engine ended the build without reporting an image id.")
    for ref in plan.tags[1:]:
        repository, tag = ref.rsplit(":", 1)
        engine.tag(image_id, repository, tag)
    info = engine.image(image_id)
    return BuildResult(info.id, plan.tags, info.size, time.monotonic() - started)


class BuildView:
    """Shows build output as it arrives and fails on the first in-band error."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.step: str | None = None
        self._status: Any = None

    def __enter__(self) -> BuildView:
        if self.reporter.rich:
            self._status = self.reporter.console.status("starting build")
            self._status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()

    def chunk(self, chunk: dict[str, Any]) -> str | None:
        """Handle one decoded chunk; returns the image id when the chunk holds it."""
        if "error" in chunk:
            self.fail(chunk)
        for line in str(chunk.get("stream", "")).splitlines():
            self.output(line.rstrip())
        if chunk.get("status"):
            self.output(
                " ".join(str(chunk[k]) for k in ("id", "status") if chunk.get(k))
            )
        aux = chunk.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
            return str(aux["ID"])
        return None

    def output(self, line: str) -> None:
        """Print one line of engine output, remembering the current step."""
        if not line:
            return
        is_step = bool(_STEP.match(line))
        if is_step:
            self.step = line
            if self._status is not None:
                self._status.update(line[:100])
        self.reporter.line(line, "bold cyan" if is_step else "dim")

    def fail(self, chunk: dict[str, Any]) -> None:
        """Raise the build error with the step that failed."""
        detail = chunk.get("errorDetail") or {}
        message = mask(str(detail.get("message") or chunk["error"]).strip())
        where = f" at {self.step}" if self.step else ""
        raise CheckFailed(
            f"Build failed{where}: {message}", step=self.step, error=message
        )

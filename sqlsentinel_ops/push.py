"""`push`: tags to a registry, per-layer progress, errors the engine sends in-band."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, TextIO

from sqlsentinel.masking import mask, register_secret
from sqlsentinel_ops.engine import Engine
from sqlsentinel_ops.errors import CheckFailed, ImageNotFound, UsageProblem
from sqlsentinel_ops.output import Reporter

USER_ENV = "SENTINEL_OPS_REGISTRY_USER"
PASSWORD_ENV = "SENTINEL_OPS_REGISTRY_PASSWORD"  # noqa: S105 - the variable's name


@dataclass(frozen=True)
class PushTarget:
    """One local image pushed as ``repository:tag``."""

    image_id: str
    repository: str
    tag: str

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass
class PushResult:
    """The registry's answer for one pushed tag."""

    ref: str
    digest: str | None = None
    size: int | None = None
    layers: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The JSON form: digest, manifest size, and how many layers were uploaded."""
        pushed = sum(1 for status in self.layers.values() if status == "Pushed")
        return {
            "ref": self.ref,
            "digest": self.digest,
            "size": self.size,
            "layers_pushed": pushed,
            "layers_existing": len(self.layers) - pushed,
        }


def split_ref(ref: str) -> tuple[str, str | None]:
    """Split ``host:5000/name:tag`` into repository and tag (None when absent)."""
    if "@" in ref:
        raise UsageProblem(f"{ref}: push a tag, not a digest")
    head, _, last = ref.rpartition("/")
    if ":" in last:
        name, tag = last.rsplit(":", 1)
        return (f"{head}/{name}" if head else name), tag
    return ref, None


def plan_push(
    engine: Engine,
    image: str,
    registry: str | None,
    name: str | None,
    tags: list[str],
    all_tags: bool,
) -> list[PushTarget]:
    """Which ``repository:tag`` names to push, tagging them locally when needed."""
    source, source_tag = split_ref(image)
    if all_tags and (source_tag or tags):
        raise UsageProblem("--all-tags takes a name without a tag, and no --tag")
    if all_tags:
        pairs = [(ref, split_ref(ref)[1] or "latest") for ref in engine.tags_of(source)]
        if not pairs:
            raise ImageNotFound(f"No local image is named {source}.")
    else:
        # Like `docker push`: a name without a tag means :latest.
        ref = f"{source}:{source_tag or 'latest'}"
        pairs = [(ref, tag) for tag in tags or [source_tag or "latest"]]
    repository = source
    if registry:
        repository = f"{registry.rstrip('/')}/{name or source.rsplit('/', 1)[-1]}"
    return [_target(engine, ref, repository, tag) for ref, tag in pairs]


def _target(engine: Engine, ref: str, repository: str, tag: str) -> PushTarget:
    """Resolve ``ref`` and give it the name ``repository:tag`` if it lacks it."""
    info = engine.image(ref)
    target = PushTarget(info.id, repository, tag)
    if target.ref not in info.tags:
        engine.tag(info.id, repository, tag)
    return target


def credentials(
    username: str | None, password_stdin: bool, stdin: TextIO
) -> dict[str, str] | None:
    """Credentials from stdin or the environment; None defers to Docker's config."""
    user = username or os.environ.get(USER_ENV) or None
    if password_stdin:
        password: str | None = stdin.read().rstrip("\r\n") or None
        if password is None:
            raise UsageProblem("--password-stdin was given but stdin held no password")
    else:
        password = os.environ.get(PASSWORD_ENV) or None
    if password:
        register_secret(password)
    if user and password:
        return {"username": user, "password": password}
    if password:
        raise UsageProblem(
            f"A password was given without a user: set {USER_ENV} or --username."
        )
    if user:
        raise UsageProblem(
            "A registry user was given without a password: "
            f"use --password-stdin or {PASSWORD_ENV}."
        )
    return None


def push_one(
    engine: Engine, target: PushTarget, auth: dict[str, str] | None, view: PushView
) -> PushResult:
    """Push one tag; fail on any error event even though the HTTP answer was 200."""
    result = PushResult(target.ref)
    view.start(target.ref)
    try:
        for event in engine.push(target.repository, target.tag, auth):
            view.event(event, result)
    finally:
        view.stop()
    if not result.digest:
        raise CheckFailed(
            f"The engine ended the push of {target.ref} without a digest."
        )
    return result


class PushView:
    """Per-layer progress: Rich bars on a terminal, one line per change otherwise."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.ref = ""
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def start(self, ref: str) -> None:
        """Begin showing one push."""
        self.ref = ref
        self._tasks = {}
        self.reporter.line(f"pushing {ref}")
        if self.reporter.rich:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                console=self.reporter.console,
            )
            self._progress.start()

    def stop(self) -> None:
        """Stop the progress display."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def event(self, event: dict[str, Any], result: PushResult) -> None:
        """Handle one push event; raise on an in-band error."""
        if "error" in event:
            detail = event.get("errorDetail") or {}
            message = mask(str(detail.get("message") or event["error"]).strip())
            raise CheckFailed(f"Push of {self.ref} failed: {message}", error=message)
        aux = event.get("aux")
        if isinstance(aux, dict) and aux.get("Digest"):
            result.digest, result.size = str(aux["Digest"]), aux.get("Size")
        layer, status = event.get("id"), event.get("status")
        if layer and status:
            self.layer(
                str(layer), str(status), event.get("progressDetail") or {}, result
            )
        elif status and not self.reporter.rich:
            self.reporter.line(str(status))

    def layer(
        self, layer: str, status: str, progress: dict[str, Any], result: PushResult
    ) -> None:
        """Update one layer's bar, or print its new state once."""
        previous = result.layers.get(layer)
        result.layers[layer] = status
        if self._progress is None:
            if status != previous and status != "Pushing":
                self.reporter.line(f"  {layer}: {status}")
            return
        if layer not in self._tasks:
            self._tasks[layer] = self._progress.add_task(layer, total=None)
        total = progress.get("total")
        done = status in {"Pushed", "Layer already exists"} or status.startswith(
            "Mounted"
        )
        self._progress.update(
            self._tasks[layer],
            description=f"{layer} {status}",
            completed=progress.get("current", total if done and total else 0),
            total=total,
        )

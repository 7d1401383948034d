"""The sentinel-ops command line.

Only Typer is imported at start-up; docker, rich, httpx and the command modules are
imported inside the commands so that ``--help`` stays fast.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from sqlsentinel_ops.errors import ExitCode, OpsError, UsageProblem
from sqlsentinel_ops.output import Reporter, error_line

app = typer.Typer(
    name="sentinel-ops",
    help="Build, test, push, measure, benchmark and validate SQL Sentinel images.",
    no_args_is_help=True,
    add_completion=False,
    # Commands handle registry credentials: a traceback must never show locals.
    pretty_exceptions_show_locals=False,
    # Plain help: rendering it with Rich would double the start-up time.
    rich_markup_mode=None,
)

Body = Callable[[Reporter], dict[str, Any]]
JsonFlag = Annotated[
    bool,
    typer.Option(
        "--json", help="Print one JSON document on stdout; human output goes to stderr."
    ),
]
Network = Annotated[
    str | None,
    typer.Option(
        "--network",
        envvar="SENTINEL_OPS_NETWORK",
        help="Network for build steps and containers, e.g. host.",
    ),
]
Labels = Annotated[
    list[str] | None,
    typer.Option(
        "--label", help="Extra KEY=VALUE label on what is created (repeatable)."
    ),
]
Image = Annotated[str, typer.Argument(help="Image reference, e.g. sqlsentinel:0.1.0.")]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config", help="Configuration to run with (default: the bundled example)."
    ),
]


def run_command(name: str, json_mode: bool, body: Body) -> None:
    """Run a command body; map its outcome and errors to output and an exit code."""
    reporter = Reporter(name, json_mode)
    try:
        document = body(reporter)
    except OpsError as exc:
        error_line(exc.message)
        error = {"kind": exc.kind, "message": exc.message, **exc.details}
        reporter.emit({"ok": False, "exit_code": int(exc.exit_code), "error": error})
        raise typer.Exit(int(exc.exit_code)) from None
    except KeyboardInterrupt:
        error_line("interrupted; what this command started has been removed")
        error = {"kind": "interrupted", "message": "interrupted"}
        reporter.emit(
            {"ok": False, "exit_code": int(ExitCode.INTERRUPTED), "error": error}
        )
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    code = ExitCode.OK if document["ok"] else ExitCode.CHECK_FAILED
    reporter.emit({**document, "exit_code": int(code)})
    raise typer.Exit(int(code))


def parse_pairs(values: list[str] | None, option: str) -> dict[str, str]:
    """Turn repeated KEY=VALUE options into a dict."""
    pairs = {}
    for value in values or []:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise UsageProblem(f"{option} {value!r}: expected KEY=VALUE")
        pairs[key] = rest
    return pairs


def _connect() -> Any:
    """The engine; tests replace this function to hand commands a fake engine."""
    from sqlsentinel_ops.engine import connect

    return connect()


def _http_client(timeout: float) -> Any:
    """An httpx client that never uses proxies: targets are on this machine."""
    import httpx

    return httpx.Client(timeout=timeout, trust_env=False)


# ---------------------------------------------------------------------------------
# build


@app.command()
def build(
    context: Annotated[
        Path, typer.Argument(help="Build context: the repository root.")
    ] = Path(),
    file: Annotated[
        str, typer.Option("--file", "-f", help="Dockerfile in the context.")
    ] = "Dockerfile",
    repository: Annotated[
        str, typer.Option("--repository", "-r", help="Image name without tag.")
    ] = "sqlsentinel",
    latest: Annotated[bool, typer.Option("--latest", help="Also tag :latest.")] = False,
    base_image: Annotated[
        str | None, typer.Option("--base-image", help="BASE_IMAGE build arg.")
    ] = None,
    extras: Annotated[
        str | None,
        typer.Option("--extras", help="EXTRAS build arg, e.g. postgresql,mysql."),
    ] = None,
    build_arg: Annotated[
        list[str] | None, typer.Option("--build-arg", help="Other KEY=VALUE build arg.")
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not use the build cache.")
    ] = False,
    pull: Annotated[
        bool, typer.Option("--pull", help="Pull a newer base image first.")
    ] = False,
    network: Network = None,
    label: Labels = None,
    json_output: JsonFlag = False,
) -> None:
    """Build the image, tagged with its version and git revision."""

    def body(reporter: Reporter) -> dict[str, Any]:
        from sqlsentinel_ops import build as b
        from sqlsentinel_ops.units import format_bytes, format_seconds

        args = parse_pairs(build_arg, "--build-arg")
        args.update(
            {k: v for k, v in (("BASE_IMAGE", base_image), ("EXTRAS", extras)) if v}
        )
        args.setdefault("BASE_IMAGE", _dockerfile_default(context / file, "BASE_IMAGE"))
        plan = b.plan_build(
            context,
            file,
            repository,
            latest=latest,
            buildargs=_drop_empty(args),
            extra_labels=parse_pairs(label, "--label"),
            nocache=no_cache,
            network=network,
            pull=pull,
        )
        if plan.revision is None:
            reporter.line("no git revision found: tagging the version only")
        engine = _connect()
        with b.BuildView(reporter) as view:
            result = b.run_build(engine, plan, view)
        reporter.table(
            "built",
            ["image id", "tags", "size", "build time"],
            [
                [
                    result.image_id,
                    ", ".join(result.tags),
                    format_bytes(result.size),
                    format_seconds(result.seconds),
                ]
            ],
        )
        return {
            "ok": True,
            "image_id": result.image_id,
            "tags": list(result.tags),
            "size_bytes": result.size,
            "build_seconds": round(result.seconds, 3),
            "version": plan.version,
            "revision": plan.revision,
        }

    run_command("build", json_output, body)


def _dockerfile_default(dockerfile: Path, name: str) -> str:
    """The default of ``ARG name=...`` in a Dockerfile, or an empty string."""
    try:
        text = dockerfile.read_text(encoding="utf-8")
    except OSError:
        return ""
    match = re.search(rf"^\s*ARG\s+{name}=(\S+)", text, re.MULTILINE)
    return match.group(1).strip("\"'") if match else ""


def _drop_empty(args: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in args.items() if v}


# ---------------------------------------------------------------------------------
# test


@app.command("test")
def check_image(
    image: Image,
    config: ConfigFile = None,
    network: Network = None,
    timeout: Annotated[
        str, typer.Option("--timeout", help="Longest wait for health and for an alert.")
    ] = "30s",
    grace: Annotated[
        str, typer.Option("--grace", help="Longest wait for exit after SIGTERM.")
    ] = "15s",
    label: Labels = None,
    json_output: JsonFlag = False,
) -> None:
    """Run the image on an example config and check it."""

    def body(reporter: Reporter) -> dict[str, Any]:
        from sqlsentinel_ops.containers import read_config, sentinel_container
        from sqlsentinel_ops.smoke import SmokeTest
        from sqlsentinel_ops.units import parse_seconds

        limits = parse_seconds(timeout, "--timeout"), parse_seconds(grace, "--grace")
        text, labels = read_config(config), parse_pairs(label, "--label")
        engine = _connect()
        info = engine.image(image)
        with (
            _http_client(2.0) as client,
            sentinel_container(
                engine,
                image,
                purpose="test",
                network=network,
                config=text,
                labels=labels,
            ) as running,
        ):
            smoke = SmokeTest(running, client, reporter, *limits, info.healthcheck)
            ok = smoke.run()
            if not ok:
                _show_logs(reporter, running.container)
        reporter.check("container removed", True, running.container.name)
        return {"ok": ok, "image": image, "image_id": info.id, "steps": smoke.as_json()}

    run_command("test", json_output, body)


def _show_logs(reporter: Reporter, container: Any) -> None:
    """Print the last lines of a failed container's output."""
    reporter.line(f"last lines of {container.name}:")
    for line in container.logs(40).splitlines():
        reporter.line(f"  | {line}")


# ---------------------------------------------------------------------------------
# push


@app.command()
def push(
    image: Image,
    registry: Annotated[
        str | None, typer.Option("--registry", help="Registry host[:port] to push to.")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="Repository in the registry (default: the image's)."
        ),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", help="Tag to push (default: the given tag, else all)."),
    ] = None,
    username: Annotated[
        str | None, typer.Option("--username", help="Registry user.")
    ] = None,
    all_tags: Annotated[
        bool, typer.Option("--all-tags", help="Push every local tag of the name.")
    ] = False,
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the registry password from stdin."),
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Push the image's tags to a registry."""

    def body(reporter: Reporter) -> dict[str, Any]:
        from sqlsentinel_ops import push as p

        auth = p.credentials(username, password_stdin, sys.stdin)
        engine = _connect()
        targets = p.plan_push(engine, image, registry, name, list(tag or []), all_tags)
        view = p.PushView(reporter)
        results = [
            p.push_one(engine, target, auth, view).summary() for target in targets
        ]
        reporter.table(
            "pushed",
            ["ref", "digest", "layers pushed", "already there"],
            [
                [
                    r["ref"],
                    str(r["digest"]),
                    str(r["layers_pushed"]),
                    str(r["layers_existing"]),
                ]
                for r in results
            ],
        )
        return {"ok": True, "image": image, "pushed": results}

    run_command("push", json_output, body)


# ---------------------------------------------------------------------------------
# measure


@app.command()
def measure(
    image: Image,
    max_size: Annotated[
        str | None, typer.Option("--max-size", help="Size budget, e.g. 300MB.")
    ] = None,
    base_image: Annotated[
        str | None,
        typer.Option(
            "--base-image", help="Base image (default: from the build label)."
        ),
    ] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Layers to show.")] = 10,
    json_output: JsonFlag = False,
) -> None:
    """Show image size, largest layers, base share; budget."""

    def body(reporter: Reporter) -> dict[str, Any]:
        from sqlsentinel_ops.measure import instruction, largest_first, measure
        from sqlsentinel_ops.units import format_bytes, parse_size

        budget = parse_size(max_size, "--max-size") if max_size else None
        found = measure(_connect(), image, base_image)
        rows = [
            [format_bytes(la.size), instruction(la)[:100]]
            for la in largest_first(found.layers)
        ]
        reporter.table(
            f"largest layers of {image}", ["size", "instruction"], rows[:top]
        )
        reporter.line(f"size (uncompressed): {format_bytes(found.size)}")
        if found.base_share is not None:
            reporter.line(
                f"base image {found.base}: {format_bytes(found.base_size or 0)} "
                f"({found.base_share:.0%} of the image)"
            )
        ok = budget is None or found.size <= budget
        if budget is not None:
            reporter.check(
                f"size budget {format_bytes(budget)}", ok, format_bytes(found.size)
            )
        return {"ok": ok, **found.as_json(), "max_size_bytes": budget}

    run_command("measure", json_output, body)


# ---------------------------------------------------------------------------------
# benchmark


@app.command()
def benchmark(
    image: Image,
    runs: Annotated[
        int, typer.Option("--runs", "-n", min=1, max=100, help="Cold starts.")
    ] = 5,
    max_startup: Annotated[
        str | None,
        typer.Option("--max-startup", help="Budget for the p95 start time, e.g. 5s."),
    ] = None,
    max_memory: Annotated[
        str | None,
        typer.Option("--max-memory", help="Budget for memory after start, e.g. 200MB."),
    ] = None,
    history: Annotated[
        Path | None,
        typer.Option(
            "--history", help="JSON-lines file to compare with and append to."
        ),
    ] = None,
    timeout: Annotated[
        str, typer.Option("--timeout", help="Longest wait for one start.")
    ] = "60s",
    config: ConfigFile = None,
    network: Network = None,
    label: Labels = None,
    json_output: JsonFlag = False,
) -> None:
    """Time cold starts to healthy and read memory; budgets."""

    def body(reporter: Reporter) -> dict[str, Any]:
        from sqlsentinel_ops import benchmark as bm
        from sqlsentinel_ops.units import parse_seconds, parse_size

        budgets: dict[str, float | None] = dict.fromkeys(
            ("max_startup_seconds", "max_memory_bytes")
        )
        if max_startup:
            budgets["max_startup_seconds"] = parse_seconds(max_startup, "--max-startup")
        if max_memory:
            budgets["max_memory_bytes"] = parse_size(max_memory, "--max-memory")
        limit = parse_seconds(timeout, "--timeout")
        previous = bm.last_record(history) if history else None
        engine = _connect()
        info = engine.image(image)
        cold = [
            _cold_start(reporter, engine, image, i, limit, config, network, label)
            for i in range(1, runs + 1)
        ]
        result = bm.record(image, info.id, cold, budgets)
        _show_benchmark(reporter, result, previous)
        failures = bm.budget_failures(result)
        for failure in failures:
            reporter.check("budget", False, failure)
        if history:
            bm.append_record(history, result)
        delta = bm.deltas(previous, result) if previous else None
        return {"ok": not failures, **result, "delta": delta, "failures": failures}

    run_command("benchmark", json_output, body)


def _cold_start(
    reporter: Reporter,
    engine: Any,
    image: str,
    number: int,
    limit: float,
    config: Path | None,
    network: str | None,
    label: list[str] | None,
) -> Any:
    """Start one fresh container, time it to healthy, read memory, remove it."""
    from sqlsentinel_ops.benchmark import Run
    from sqlsentinel_ops.containers import read_config, sentinel_container
    from sqlsentinel_ops.errors import CheckFailed
    from sqlsentinel_ops.probes import wait_healthy
    from sqlsentinel_ops.units import format_bytes, format_seconds

    with (
        _http_client(2.0) as client,
        sentinel_container(
            engine,
            image,
            purpose="benchmark",
            network=network,
            config=read_config(config),
            labels=parse_pairs(label, "--label"),
        ) as running,
    ):
        running.start()
        try:
            wait_healthy(client, running.base_url, limit, running.alive)
            # From just before the start call: the engine's share counts too.
            seconds = time.perf_counter() - running.started_at
        except (TimeoutError, RuntimeError) as exc:
            _show_logs(reporter, running.container)
            raise CheckFailed(f"run {number}: not healthy: {exc}") from None
        memory = running.container.memory_bytes()
    reporter.line(
        f"run {number}: healthy after {format_seconds(seconds)}, "
        f"memory {format_bytes(memory)}"
    )
    return Run(seconds, memory)


def _show_benchmark(
    reporter: Reporter, result: dict[str, Any], previous: dict[str, Any] | None
) -> None:
    """Print the summary table and the change since the previous result."""
    from sqlsentinel_ops.units import format_bytes, format_seconds

    start, memory = result["startup_seconds"], result["memory_bytes"]
    stats = ["min", "median", "p95", "max"]
    reporter.table(
        f"{result['runs']} cold starts of {result['image']}",
        ["", *stats],
        [
            ["start to healthy", *(format_seconds(start[s]) for s in stats)],
            ["memory after start", *(format_bytes(memory[s]) for s in stats)],
        ],
    )
    if previous is None:
        return
    for key, label in (("median", "startup median"), ("p95", "startup p95")):
        change = start[key] - previous["startup_seconds"][key]
        reporter.line(
            f"{label}: {format_seconds(start[key])} ({change:+.3f} s since "
            f"{previous.get('timestamp', 'the last run')})"
        )
    change = memory["median"] - previous["memory_bytes"]["median"]
    reporter.line(
        f"memory median: {format_bytes(memory['median'])} ({change / 1e6:+.1f} MB)"
    )


# ---------------------------------------------------------------------------------
# validate


@app.command()
def validate(
    target: Annotated[
        str, typer.Argument(help="URL of SQL Sentinel, or the name of its container.")
    ] = "http://127.0.0.1:8080",
    fail_on_degraded: Annotated[
        bool, typer.Option("--fail-on-degraded", help="Exit 1 when degraded, too.")
    ] = False,
    timeout: Annotated[
        str, typer.Option("--timeout", help="Timeout of each request.")
    ] = "5s",
    json_output: JsonFlag = False,
) -> None:
    """Check a running SQL Sentinel over HTTP."""

    def body(reporter: Reporter) -> dict[str, Any]:
        from sqlsentinel_ops.units import parse_seconds
        from sqlsentinel_ops.validate import validate as check

        limit = parse_seconds(timeout, "--timeout")
        url = target.rstrip("/")
        if not url.startswith(("http://", "https://")):
            url = _connect().container_url(target)
        with _http_client(limit) as client:
            result = check(client, url)
        for line in result.checks:
            latency = (
                f" [{line.latency_ms:.0f} ms]" if line.latency_ms is not None else ""
            )
            reporter.check(line.name, line.ok, line.detail + latency)
        ok = result.ok and not (fail_on_degraded and result.status == "degraded")
        return {"ok": ok, **result.as_json()}

    run_command("validate", json_output, body)


def main() -> None:
    """Entry point of the sentinel-ops console script."""
    sys.exit(run(sys.argv[1:]))


def run(argv: list[str]) -> int:
    """Run the CLI on ``argv``; the exit code, also for usage errors and interrupts."""
    from typer._click.exceptions import UsageError

    try:
        code = app(args=argv, prog_name="sentinel-ops", standalone_mode=False)
    except UsageError as exc:
        return _usage_error(exc, argv)
    except (typer.Abort, KeyboardInterrupt):
        error_line("interrupted")
        return int(ExitCode.INTERRUPTED)
    return int(code) if isinstance(code, int) else int(ExitCode.OK)


def _usage_error(exc: Any, argv: list[str]) -> int:
    """Report a parser error like any other: a sentence, and JSON when asked."""
    exc.show(file=sys.stderr)
    if "--json" in argv:
        name = exc.ctx.info_name if exc.ctx is not None else "sentinel-ops"
        Reporter(name, True).emit(
            {
                "ok": False,
                "exit_code": int(ExitCode.USAGE),
                "error": {"kind": "usage", "message": exc.format_message()},
            }
        )
    return int(ExitCode.USAGE)

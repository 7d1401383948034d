"""The `sqlsentinel` command line.

Exit codes (a contract, see docs/cli.md):
0 all alerts OK (or the command succeeded), 1 at least one alert firing,
2 bad usage or configuration, 3 at least one execution failed, 130 interrupted
(SIGINT), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from sqlsentinel import __version__

if TYPE_CHECKING:
    from rich.console import Console

    from sqlsentinel.config import LoadedConfig
    from sqlsentinel.state import ExecutionRecord, StateStore

EXIT_OK = 0
EXIT_FIRING = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

app = typer.Typer(
    name="sqlsentinel",
    help="SQL alerting: alerts are SQL queries in YAML, run on cron schedules.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

ConfigArg = Annotated[
    Path,
    typer.Argument(
        help="Alert configuration file (YAML).",
        envvar="SQLSENTINEL_CONFIG",
        show_default=False,
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Alert configuration file (YAML).",
        envvar="SQLSENTINEL_CONFIG",
    ),
]
StateOpt = Annotated[
    str | None,
    typer.Option(
        "--state-db",
        help="State database URL (default: env SQLSENTINEL_STATE_DB, then the config, then a SQLite file).",
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON document for scripts.")
]
LogFormatOpt = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        help="json or text (default: env SQLSENTINEL_LOG_FORMAT, else text on a terminal, json otherwise).",
    ),
]
LogLevelOpt = Annotated[
    str | None,
    typer.Option(
        "--log-level",
        help="debug, info, warning or error (default: env SQLSENTINEL_LOG_LEVEL, else info for the daemon, warning otherwise).",
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sqlsentinel {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    log_format: LogFormatOpt = None,
    log_level: LogLevelOpt = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """SQL Sentinel."""
    ctx.obj = {"log_format": log_format, "log_level": log_level}


def _setup_logging(
    ctx: typer.Context,
    fmt: str | None,
    level: str | None,
    *,
    default_level: str,
    stream: Any = None,
) -> None:
    """Configure logs from the command's options, else the global ones, else the defaults."""
    from sqlsentinel.logs import configure_logging

    opts = ctx.obj or {}
    fmt = fmt or opts.get("log_format")
    if fmt and fmt.lower() not in {"json", "text"}:
        _usage(f"--log-format must be json or text, not {fmt!r}")
    try:
        configure_logging(
            fmt,
            level or opts.get("log_level"),
            stream=stream or sys.stderr,
            default_level=default_level,
        )
    except ValueError as exc:
        _usage(str(exc))


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Off a terminal (CI logs, pipes) keep rows on one line instead of wrapping at 80 columns.
    width = None if stream.isatty() else 200
    return Console(stderr=stderr, highlight=False, width=width)


def _usage(message: str, *, as_json: bool = False) -> NoReturn:
    _fail(message, as_json=as_json, code=EXIT_USAGE)


def _load(path: Path, *, as_json: bool = False) -> LoadedConfig:
    from sqlsentinel.config import load_config
    from sqlsentinel.errors import ConfigError

    try:
        return load_config(path)
    except ConfigError as exc:
        if as_json:
            typer.echo(
                json.dumps(
                    {"valid": False, "errors": [_issue(i) for i in exc.issues]},
                    ensure_ascii=False,
                )
            )
        else:
            typer.echo(f"{path}: {len(exc.issues)} error(s)", err=True)
            for issue in exc.issues:
                typer.echo(f"  {issue}", err=True)
        raise typer.Exit(EXIT_USAGE) from None


def _issue(issue: Any) -> dict[str, Any]:
    return {
        "file": issue.file,
        "alert": issue.alert,
        "field": issue.location,
        "message": issue.message,
    }


def _open_store(
    state_db: str | None,
    config: LoadedConfig | None,
    *,
    create: bool = True,
    as_json: bool = False,
) -> StateStore:
    """Open the state database; read-only commands (create=False) never create one."""
    from sqlalchemy.exc import ArgumentError

    from sqlsentinel.config import default_state_url
    from sqlsentinel.database import normalize_url
    from sqlsentinel.errors import StateStoreError
    from sqlsentinel.masking import mask
    from sqlsentinel.state import StateStore

    if config is not None:
        url = config.state_url(state_db)
    else:
        url = state_db or os.environ.get("SQLSENTINEL_STATE_DB") or default_state_url()
    try:
        parsed = normalize_url(url)
    except (ArgumentError, ValueError):
        _usage(f"state database: {mask(url)!r} is not a database URL", as_json=as_json)
    if not create and parsed.get_backend_name() == "sqlite" and parsed.database:
        path = Path(parsed.database).expanduser()
        if parsed.database != ":memory:" and not path.exists():
            _fail(
                f"no state database at {path}: nothing has been recorded there "
                "(check --state-db or SQLSENTINEL_STATE_DB)",
                as_json=as_json,
            )
    store = StateStore(url)
    try:
        store.open(create=create)
    except StateStoreError as exc:
        store.close()
        _fail(str(exc), as_json=as_json)
    return store


def _fail(message: str, *, as_json: bool = False, code: int = EXIT_FAILED) -> NoReturn:
    """Report an error that stops the command: to stderr, or as the JSON document."""
    if as_json:
        typer.echo(json.dumps({"error": message}, ensure_ascii=False))
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


# ---------------------------------------------------------------------------


@app.command()
def validate(ctx: typer.Context, config: ConfigArg, as_json: JsonOpt = False) -> None:
    """Check a configuration file and list every error with file, alert and field."""
    from sqlsentinel.config import config_summary

    # The logging settings are part of what the daemon needs: check them too.
    _setup_logging(ctx, None, None, default_level="warning")
    loaded = _load(config, as_json=as_json)
    if as_json:
        typer.echo(
            json.dumps(
                {"valid": True, "errors": [], **config_summary(loaded)},
                ensure_ascii=False,
            )
        )
        return
    enabled = len(loaded.enabled_alerts)
    typer.echo(
        f"{config}: valid ({len(loaded.alerts)} alerts, {enabled} enabled, {len(loaded.databases)} databases)"
    )


@app.command()
def run(
    ctx: typer.Context,
    config: ConfigArg,
    alert: Annotated[
        list[str] | None,
        typer.Option("--alert", "-a", help="Run only this alert (repeatable)."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Run the queries only: no state, no history, no notifications.",
        ),
    ] = False,
    state_db: StateOpt = None,
    as_json: JsonOpt = False,
    log_format: LogFormatOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Run alerts once, record their state and history, and send notifications."""
    _setup_logging(ctx, log_format, log_level, default_level="warning")
    loaded = _load(config, as_json=as_json)
    if alert:
        unknown = [n for n in alert if n not in {a.name for a in loaded.alerts}]
        if unknown:
            _usage(
                f"no alert named {', '.join(map(repr, unknown))} in {config}",
                as_json=as_json,
            )
        selected = [loaded.alert(n) for n in dict.fromkeys(alert)]
    else:
        selected = list(loaded.enabled_alerts)
    store = _open_store(state_db, loaded, as_json=as_json)
    try:
        records = asyncio.run(_run_alerts(loaded, store, selected, dry_run))
    except (KeyboardInterrupt, asyncio.CancelledError):
        code = EXIT_TERMINATED if _terminated else EXIT_INTERRUPTED
        _fail("interrupted", as_json=as_json, code=code)
    finally:
        store.close()
    _print_records(records, as_json, dry_run)
    raise typer.Exit(_exit_code(records))


async def _run_alerts(
    config: LoadedConfig, store: StateStore, alerts: list[Any], dry_run: bool
) -> list[ExecutionRecord]:
    from sqlsentinel.engine import Engine
    from sqlsentinel.logs import new_correlation

    engine = Engine(config, store)
    # SIGTERM (e.g. a cron job killed by its runner) ends the run like Ctrl-C does:
    # running executions are recorded as cut short instead of vanishing.
    loop, main_task = asyncio.get_running_loop(), asyncio.current_task()
    assert main_task is not None
    loop.add_signal_handler(signal.SIGTERM, _terminate, main_task)
    try:
        with new_correlation():
            if not dry_run:
                await engine.reconcile()
                await engine.deliver_due()
            records = await engine.execute_many(
                alerts, trigger="dry-run" if dry_run else "manual", dry_run=dry_run
            )
            if not dry_run:
                await engine.in_state_thread(
                    store.purge, config.raw.state.retention_days
                )
    finally:
        await engine.aclose()
    return list(records)


def _terminate(task: asyncio.Task[Any]) -> None:
    global _terminated
    _terminated = True
    task.cancel()


_terminated = False


def _exit_code(records: list[ExecutionRecord]) -> int:
    outcomes = {r.outcome for r in records}
    if outcomes & {"error", "cancelled"}:
        return EXIT_FAILED
    if "alert" in outcomes:
        return EXIT_FIRING
    return EXIT_OK


def _print_records(
    records: list[ExecutionRecord], as_json: bool, dry_run: bool
) -> None:
    from sqlsentinel.values import display

    if as_json:
        typer.echo(
            json.dumps(
                {"dry_run": dry_run, "executions": [r.to_dict() for r in records]},
                ensure_ascii=False,
            )
        )
        return
    from rich.table import Table

    table = Table(title="dry run (nothing recorded)" if dry_run else None)
    for col in ("alert", "status", "value", "threshold", "ms", "notified", "error"):
        table.add_column(col, overflow="fold")
    styles = {"OK": "green", "ALERT": "bold red", "ERROR": "bold yellow"}
    for r in records:
        status = r.status or ("ERROR" if r.outcome in {"error", "cancelled"} else "?")
        notified = ", ".join(
            f"{n['channel']}:{n['status']}" for n in r.notifications
        ) or ("silenced" if r.silenced else "-")
        table.add_row(
            r.alert_name,
            f"[{styles.get(status, '')}]{status}[/]",
            display(r.actual_value),
            display(r.threshold),
            f"{r.duration_ms or 0:.1f}",
            notified,
            r.error or "",
        )
    _console().print(table)


@app.command()
def daemon(
    ctx: typer.Context,
    config: ConfigArg,
    state_db: StateOpt = None,
    http_host: Annotated[
        str | None,
        typer.Option(
            "--http-host",
            envvar="SQLSENTINEL_HTTP_HOST",
            help="Address for /health and /metrics (default: all interfaces, IPv4 and IPv6).",
        ),
    ] = None,
    http_port: Annotated[
        int | None,
        typer.Option(
            "--http-port",
            envvar="SQLSENTINEL_HTTP_PORT",
            min=0,
            max=65535,
            help="Port for /health and /metrics (default 8080).",
        ),
    ] = None,
    no_http: Annotated[
        bool, typer.Option("--no-http", help="Do not start the HTTP server.")
    ] = False,
    run_on_start: Annotated[
        bool,
        typer.Option(
            "--run-on-start",
            help="Run every enabled alert once at start, then follow the schedules.",
        ),
    ] = False,
    log_format: LogFormatOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Run every enabled alert on its schedule until SIGTERM or SIGINT."""
    from sqlsentinel.daemon import Daemon
    from sqlsentinel.errors import ConfigError, SentinelError

    _setup_logging(ctx, log_format, log_level, default_level="info", stream=sys.stdout)
    _load(config)  # report config errors before anything starts
    runner = Daemon(
        str(config),
        state_url=state_db,
        http_enabled=not no_http,
        http_host=http_host,
        http_port=http_port,
        run_on_start=run_on_start,
    )
    try:
        code = asyncio.run(runner.run())
    except ConfigError as exc:
        for issue in exc.issues:
            typer.echo(f"  {issue}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except SentinelError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    except ValueError as exc:  # e.g. SQLSENTINEL_HTTP_PORT is not a port number
        _usage(str(exc))
    except OSError as exc:  # e.g. the HTTP port is taken
        _fail(f"could not start: {exc}")
    sys.stdout.flush()
    sys.stderr.flush()
    # Worker threads stuck in a driver call must not hold the exit: state and history
    # are written and the HTTP server is closed by now.
    os._exit(code)


@app.command()
def history(
    config: ConfigOpt = None,
    alert: Annotated[
        str | None, typer.Option("--alert", "-a", help="Only this alert.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="How many executions.")
    ] = 20,
    state_db: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show recorded executions, newest first."""
    from sqlsentinel.values import display

    loaded = _load(config) if config else None
    store = _open_store(state_db, loaded, create=False, as_json=as_json)
    try:
        records = store.history(alert, limit)
    finally:
        store.close()
    if as_json:
        typer.echo(
            json.dumps(
                {"executions": [r.to_dict() for r in records]}, ensure_ascii=False
            )
        )
        return
    from rich.table import Table

    table = Table()
    for col in (
        "started",
        "alert",
        "trigger",
        "outcome",
        "value",
        "ms",
        "notifications",
        "error",
        "execution",
    ):
        table.add_column(col, overflow="fold")
    for r in records:
        notes = (
            ", ".join(
                f"{n['channel']}:{n['kind']}:{n['status']}" for n in r.notifications
            )
            or "-"
        )
        table.add_row(
            r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.alert_name,
            r.trigger,
            r.outcome,
            display(r.actual_value),
            f"{r.duration_ms or 0:.1f}",
            notes,
            r.error or "",
            r.execution_id[:12],
        )
    _console().print(table)


@app.command()
def status(
    config: ConfigOpt = None,
    state_db: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show each alert's current state, silences and owed notifications."""
    loaded = _load(config) if config else None
    store = _open_store(state_db, loaded, create=False, as_json=as_json)
    now = datetime.now(UTC)
    try:
        states = store.all_states()
        silenced = {s.alert_name: s for s in store.active_silences(now)}
        owed = store.owed_counts()
    finally:
        store.close()
    names = [a.name for a in loaded.alerts] if loaded else sorted(states)
    rows: list[dict[str, Any]] = []
    for name in names:
        st = states.get(name)
        rows.append(
            {
                "alert_name": name,
                "status": st.status if st else None,
                "since": st.since.isoformat() if st and st.since else None,
                "last_run_at": st.last_run_at.isoformat()
                if st and st.last_run_at
                else None,
                "silenced_until": silenced[name].ends_at.isoformat()
                if name in silenced
                else None,
                "enabled": loaded.alert(name).enabled if loaded else None,
            }
        )
    if as_json:
        typer.echo(
            json.dumps({"alerts": rows, "owed_notifications": owed}, ensure_ascii=False)
        )
    else:
        from rich.table import Table

        table = Table()
        for col in ("alert", "status", "since", "last run", "silenced until"):
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(
                row["alert_name"],
                row["status"] or "never run",
                row["since"] or "-",
                row["last_run_at"] or "-",
                row["silenced_until"] or "-",
            )
        console = _console()
        console.print(table)
        if owed:
            console.print(
                "owed notifications: "
                + ", ".join(f"{k}: {v}" for k, v in sorted(owed.items()))
            )
    if any(r["status"] == "ERROR" for r in rows):
        raise typer.Exit(EXIT_FAILED)
    if any(r["status"] == "ALERT" for r in rows):
        raise typer.Exit(EXIT_FIRING)


@app.command()
def silence(
    alert: Annotated[str, typer.Option("--alert", "-a", help="The alert to silence.")],
    duration: Annotated[
        str, typer.Option("--duration", "-d", help="How long, e.g. 30m, 2h, 1d.")
    ],
    comment: Annotated[
        str | None, typer.Option("--comment", help="Why (shown in status).")
    ] = None,
    config: ConfigOpt = None,
    state_db: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Suppress an alert's notifications for a while; it still runs and is recorded."""
    from sqlsentinel.config import parse_duration

    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        _usage(f"--duration: {exc}")
    loaded = _load(config) if config else None
    if loaded and alert not in {a.name for a in loaded.alerts}:
        _usage(f"no alert named {alert!r} in {config}")
    store = _open_store(state_db, loaded, as_json=as_json)
    now = datetime.now(UTC)
    try:
        created = store.add_silence(
            alert,
            now,
            now + timedelta(seconds=seconds),
            comment,
            os.environ.get("USER") or None,
        )
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps({"silence": created.to_dict()}))
    else:
        typer.echo(
            f"{alert} silenced until {created.ends_at.isoformat(timespec='seconds')}"
        )


@app.command()
def unsilence(
    alert: Annotated[
        str, typer.Option("--alert", "-a", help="The alert to unsilence.")
    ],
    config: ConfigOpt = None,
    state_db: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """End an alert's silences now; notices they held back are sent on the next run."""
    loaded = _load(config) if config else None
    store = _open_store(state_db, loaded, as_json=as_json)
    try:
        ended = store.end_silences(alert, datetime.now(UTC))
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps({"alert_name": alert, "silences_ended": ended}))
    else:
        typer.echo(
            f"{alert}: {ended} silence(s) ended"
            if ended
            else f"{alert} was not silenced"
        )


@app.command()
def init(
    directory: Annotated[
        Path, typer.Argument(help="Where to write the starter files.")
    ] = Path("sqlsentinel"),
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite existing files.")
    ] = False,
) -> None:
    """Write a starter configuration and a sample SQLite database to try it on."""
    from sqlsentinel.sample import write_starter

    try:
        written = write_starter(directory, force=force)
    except FileExistsError as exc:
        _usage(f"{exc} exists; use --force to overwrite")
    for path in written:
        typer.echo(f"wrote {path}")
    typer.echo(
        f"next: sqlsentinel validate {directory / 'alerts.yaml'} && sqlsentinel run {directory / 'alerts.yaml'}"
    )


@app.command()
def healthcheck(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Endpoint to call (default: http://localhost:$SQLSENTINEL_HTTP_PORT/health/ready).",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds before giving up.")
    ] = 3.0,
) -> None:
    """Ask a running daemon whether it is ready; exit 0 if so, 1 if not (for container health checks).

    The console script answers this command before loading the rest of the CLI
    (sqlsentinel.entry); this definition gives it its --help and serves `python -m`.
    """
    from sqlsentinel.probe import default_url
    from sqlsentinel.probe import healthcheck as check

    code, message = check(url or default_url(), timeout)
    typer.echo(message, err=code != 0)
    raise typer.Exit(0 if code == 0 else 1)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)

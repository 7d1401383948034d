"""The `sqlsentinel` console script.

`sqlsentinel healthcheck` runs in container health checks every few seconds, so it
is answered here with the standard library alone; every other command (and
`healthcheck --help`) goes to the Typer application in sqlsentinel.cli.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["healthcheck"] and not {"-h", "--help"} & set(args):
        sys.exit(healthcheck(args[1:]))
    from sqlsentinel.cli import main as cli_main

    cli_main()


def healthcheck(args: list[str]) -> int:
    """Exit 0 when the daemon answers ready within the timeout, 1 otherwise, 2 for bad usage."""
    from sqlsentinel.probe import DEFAULT_TIMEOUT, default_url
    from sqlsentinel.probe import healthcheck as check

    parser = argparse.ArgumentParser(prog="sqlsentinel healthcheck")
    parser.add_argument("--url", default=None)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    try:
        options = parser.parse_args(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    if options.timeout < 0.1:
        parser.print_usage(sys.stderr)
        print("error: --timeout must be at least 0.1", file=sys.stderr)
        return 2
    code, message = check(options.url or default_url(), options.timeout)
    print(message, file=sys.stderr if code else sys.stdout)
    return 0 if code == 0 else 1

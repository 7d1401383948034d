"""Developer tasks: `nox -s tests`, `nox -s docker`, `nox -s lint`, `nox -s typecheck`, `nox -s bench`, `nox -s demo`."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (everything but the Docker tests) against the local databases."""
    session.install("-e", ".[dev,all]")
    session.run("pytest", "-m", "not docker", *session.posargs)


@nox.session(python=PYTHON)
def docker(session: nox.Session) -> None:
    """Run the Docker tests: build the image, run it, drive it with sentinel-ops."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-m", "docker", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Check style with ruff."""
    session.install("ruff>=0.6")
    session.run(
        "ruff",
        "check",
        "sqlsentinel",
        "sqlsentinel_ops",
        "tests",
        "noxfile.py",
        "benchmarks",
    )


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Check types with mypy (strict) on the package code."""
    session.install("-e", ".[dev]")
    session.run("mypy", "sqlsentinel", "sqlsentinel_ops")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Measure speed and memory; prints figures (not run by default)."""
    session.install("-e", ".[dev]")
    session.run("python", "benchmarks/bench_run.py", *session.posargs)
    session.run("python", "benchmarks/bench_http.py")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Run the daemon on the bundled example until Ctrl-C."""
    session.install("-e", ".")
    session.run(
        "sqlsentinel",
        "daemon",
        "examples/alerts.yaml",
        "--run-on-start",
        *session.posargs,
    )

"""`sqlsentinel healthcheck`: ask a running daemon whether it is ready.

Standard library only, and imported without the rest of the CLI (see
sqlsentinel.entry), so a container health check starts in a few tens of
milliseconds instead of loading Typer, asyncio and SQLAlchemy on every probe.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from sqlsentinel.masking import mask

MAX_BODY = 256 * 1024
DEFAULT_TIMEOUT = 3.0


def default_url() -> str:
    port = os.environ.get("SQLSENTINEL_HTTP_PORT") or "8080"
    return f"http://localhost:{port}/health/ready"


def healthcheck(url: str, timeout: float) -> tuple[int, str]:
    """GET a health URL: (0, summary) on a 2xx answer, (1, reason) otherwise.

    Returns within `timeout` seconds whatever the server does (the request runs
    in a daemon thread that is abandoned if it takes longer), ignores proxy
    variables, and masks secrets in the summary.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return 1, f"not an http(s) URL: {mask(url)!r}"
    outcome: list[tuple[int, str]] = []
    worker = threading.Thread(
        target=lambda: outcome.append(_fetch(url, timeout)),
        name="sqlsentinel-healthcheck",
        daemon=True,
    )
    worker.start()
    worker.join(timeout)
    if not outcome:
        return 1, f"{mask(url)}: no answer within {timeout:g} s"
    return outcome[0]


def _fetch(url: str, timeout: float) -> tuple[int, str]:
    # An empty ProxyHandler: HTTP_PROXY in a container must not reroute the probe.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    # The scheme was checked by healthcheck: only http and https get here.
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with opener.open(request, timeout=timeout) as response:
            return _verdict(response.status, response.read(MAX_BODY))
    except urllib.error.HTTPError as err:
        with err:
            return _verdict(err.code, err.read(MAX_BODY))
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        return 1, mask(f"{url}: cannot connect: {reason}")


def _verdict(code: int, raw: bytes) -> tuple[int, str]:
    """Exit code and a one-line summary from an HTTP status and a health body."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = None
    status = body.get("status") if isinstance(body, dict) else None
    summary = f"{status or 'answer'} (HTTP {code})"
    problems = _problems(body) if isinstance(body, dict) else []
    if problems:
        summary += ": " + "; ".join(problems)
    return (0 if 200 <= code < 300 else 1), mask(summary)


def _problems(body: dict[str, Any]) -> list[str]:
    """Readiness reasons, or every failing check of a /health body, by path."""
    reasons = body.get("reasons")
    if isinstance(reasons, list):
        return [str(r) for r in reasons]
    found: list[str] = []

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        if "message" in node and node.get("status") not in (None, "healthy"):
            found.append(f"{path}: {node['message']}")
        for key, child in node.items():
            walk(child, f"{path}.{key}" if path else str(key))

    walk(body.get("checks"), "")
    return found

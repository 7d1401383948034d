"""Wait until SQL Sentinel's /metrics shows the expected alert outcomes.

Used by compose/docker-compose.test.yaml (and by tests/docker): stdlib only, so
it runs in the SQL Sentinel image itself.

Environment:
  SENTINEL_URL    base URL of the daemon, e.g. http://sqlsentinel:8080
  VERIFY_EXPECT   comma-separated alert_name=status pairs (status: ok, alert, error)
                  each of which must have counted at least one execution
  VERIFY_TIMEOUT  seconds to wait before giving up (default 60)
Exit status 0 when every expectation is met, 1 otherwise (the reason on stderr).
"""

from __future__ import annotations

import os
import re
import sys
import time
import urllib.error
import urllib.request

SAMPLE = re.compile(
    r'^sqlsentinel_alerts_total\{alert_name="(?P<alert>[^"]*)",status="(?P<status>[^"]*)"\}'
    r" (?P<value>\S+)$"
)


def parse_expectations(text: str) -> set[tuple[str, str]]:
    """Turn "a=alert,b=ok" into {("a", "alert"), ("b", "ok")}."""
    pairs = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        alert, sep, status = item.partition("=")
        if not sep or not alert or status not in {"ok", "alert", "error"}:
            raise SystemExit(
                f"verify: bad VERIFY_EXPECT item {item!r} (want name=ok|alert|error)"
            )
        pairs.add((alert, status))
    return pairs


def counted(metrics_text: str) -> set[tuple[str, str]]:
    """The (alert, status) pairs whose execution counter is above zero."""
    seen = set()
    for line in metrics_text.splitlines():
        match = SAMPLE.match(line)
        if match and float(match["value"]) > 0:
            seen.add((match["alert"], match["status"]))
    return seen


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - operator-set URL
        return response.read().decode("utf-8")


def main() -> int:
    base = os.environ.get("SENTINEL_URL", "http://sqlsentinel:8080").rstrip("/")
    expected = parse_expectations(os.environ.get("VERIFY_EXPECT", ""))
    if not expected:
        print("verify: VERIFY_EXPECT is empty", file=sys.stderr)
        return 1
    deadline = time.monotonic() + float(os.environ.get("VERIFY_TIMEOUT", "60"))
    missing, last_error = expected, ""
    while time.monotonic() < deadline:
        try:
            missing = expected - counted(fetch(f"{base}/metrics"))
            last_error = ""
        except (OSError, urllib.error.URLError) as exc:
            last_error = str(exc)
        if not missing:
            print(
                f"verify: ok, seen {', '.join(f'{a}={s}' for a, s in sorted(expected))}"
            )
            return 0
        time.sleep(1)  # polling a remote daemon: nothing to wait on but time
    wanted = ", ".join(f"{a}={s}" for a, s in sorted(missing))
    print(f"verify: gave up; not seen: {wanted} {last_error}".rstrip(), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

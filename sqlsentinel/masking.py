"""Hide secrets (passwords, tokens, webhook URLs) in every text that leaves the process."""

from __future__ import annotations

import re
import threading

MASK = "***"

# user:password@ in any URL-like string, whatever the scheme.
_URL_PASSWORD = re.compile(
    r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s/]+)(?P<at>@)"
)
# key=value pairs in DSNs, query strings and connect strings.
_KV_SECRET = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?token|"
    r"private[_-]?key|client[_-]?secret|sig|signature)\s*[=:]\s*)"
    r"(?P<q>['\"]?)(?P<value>[^'\"\s&;,)]+)(?P=q)",
    re.IGNORECASE,
)
# Slack incoming-webhook paths carry the secret in the URL itself.
_SLACK_HOOK = re.compile(r"(hooks\.slack\.com/services/)[A-Za-z0-9/_\-]+")
_BEARER = re.compile(
    # A credential is a long token: "no basic auth credentials" must stay readable.
    r"(?P<head>\b(?:Bearer|Basic|Token token=)\s*)[A-Za-z0-9._~+/=\-]{8,}",
    re.IGNORECASE,
)

_lock = threading.Lock()
_known: set[str] = set()
_known_pattern: re.Pattern[str] | None = None


def register_secret(*values: str | None) -> None:
    """Remember literal secrets (resolved from the config) so they are masked everywhere."""
    global _known_pattern
    with _lock:
        added = {v for v in values if v and len(v) >= 4} - _known
        if added:
            _known.update(added)
            # Longest first; case-insensitive, since a parser may echo a value lowercased.
            alternatives = "|".join(
                re.escape(v) for v in sorted(_known, key=len, reverse=True)
            )
            _known_pattern = re.compile(alternatives, re.IGNORECASE)


def mask(text: str) -> str:
    """Return ``text`` with every secret it holds replaced by ``***``."""
    if not text:
        return text
    pattern = _known_pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK + m["at"], text)
    text = _KV_SECRET.sub(lambda m: m["key"] + m["q"] + MASK + m["q"], text)
    text = _SLACK_HOOK.sub(r"\1" + MASK, text)
    return _BEARER.sub(lambda m: m["head"] + MASK, text)

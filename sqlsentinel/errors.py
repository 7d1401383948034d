"""The exception tree of SQL Sentinel: every error it raises on purpose is one of these."""

from __future__ import annotations

from dataclasses import dataclass


class SentinelError(Exception):
    """Base of every error SQL Sentinel raises on purpose."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration file, located by file, alert and field."""

    file: str
    location: str
    message: str
    alert: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.alert:
            where += f": alert {self.alert!r}"
        if self.location:
            where += f": {self.location}"
        return f"{where}: {self.message}"


class ConfigError(SentinelError):
    """Raised when a configuration file cannot be read or does not validate."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        from dataclasses import replace

        from sqlsentinel.masking import mask

        # Messages quote the values they reject; a value may come from a secret.
        self.issues = [
            replace(
                issue,
                message=mask(issue.message),
                alert=mask(issue.alert) if issue.alert else None,
            )
            for issue in issues
        ]
        super().__init__("\n".join(str(issue) for issue in self.issues))


class QueryContractError(SentinelError):
    """Raised when an alert query's result breaks the query contract."""


class QueryError(SentinelError):
    """Raised when the database rejects or fails an alert query."""


class DatabaseConnectionError(QueryError):
    """Raised when a database cannot be reached or its driver cannot be loaded."""


class QueryTimeoutError(SentinelError):
    """Raised when an alert query runs longer than its timeout."""


class ReadOnlyViolationError(SentinelError):
    """Raised when an alert query tries to change data or schema."""


class DeliveryError(SentinelError):
    """Raised when a notification could not be delivered to a channel.

    ``retryable`` says whether trying again may help (a 5xx, a timeout, a refused
    connection) or not (a 4xx other than 429, a rejected recipient).
    ``retry_after`` is the delay, in seconds, the receiver asked for.
    """

    def __init__(
        self, message: str, *, retryable: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class StateStoreError(SentinelError):
    """Raised when the state database cannot be read or written."""

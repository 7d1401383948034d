"""Configuration: YAML files, environment substitution, and the validated model.

Every problem found while loading is collected as a :class:`ConfigIssue` naming the
file, the alert and the field, and all of them are raised together in one
:class:`ConfigError`, so that a user fixes a file in one pass.
"""

from __future__ import annotations

import hashlib
import os
import re
import string
import zoneinfo
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sqlsentinel.errors import ConfigError, ConfigIssue
from sqlsentinel.masking import register_secret

DEFAULT_STATE_URL_ENV = "SQLSENTINEL_STATE_DB"
DEFAULT_TIMEOUT = 60.0
DEFAULT_DATABASE = "default"

# ---------------------------------------------------------------------------
# Durations


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> float:
    """Parse ``90``, ``"90s"``, ``"5m"``, ``"1h30m"``, ``"2d"`` into seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 2h")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(
                    f"{value!r} is not a duration such as 30s, 5m, 1h30m, 2d"
                )
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        raise ValueError("expected a duration such as 30s, 5m, 2h")
    if seconds <= 0:
        raise ValueError("a duration must be greater than zero")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]

# ---------------------------------------------------------------------------
# Templates

TEMPLATE_FIELDS = frozenset(
    {
        "alert_name",
        "description",
        "status",
        "previous_status",
        "kind",
        "actual_value",
        "threshold",
        "execution_id",
        "timestamp",
        "database",
        "error",
    }
)


def check_template(template: str) -> str:
    """Check that a ``{field}`` template parses and names only known fields."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"template does not parse: {exc}") from None
    for _, field, _, _ in parsed:
        if field is None:
            continue
        base = re.split(r"[.\[]", field, maxsplit=1)[0]
        if base not in TEMPLATE_FIELDS:
            known = ", ".join(sorted(TEMPLATE_FIELDS))
            raise ValueError(f"template field {{{field}}} is unknown (known: {known})")
    return template


Template = Annotated[str, BeforeValidator(check_template)]

# ---------------------------------------------------------------------------
# Models


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class DatabaseConfig(_Strict):
    """A database that alert queries run against."""

    url: str
    pool_size: int = Field(default=2, ge=1, le=100)
    max_overflow: int = Field(default=2, ge=0, le=100)
    pool_recycle: Duration = 1800.0
    connect_timeout: Duration = 10.0
    read_only: bool = True
    connect_args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url_parses(cls, url: str) -> str:
        return check_database_url(url)


def check_database_url(url: str) -> str:
    """Check that a database URL parses and that a driver for it is installed."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from sqlsentinel.database import normalize_url

    try:
        parsed = normalize_url(url)
    except (ArgumentError, ValueError):
        raise ValueError(
            "is not a database URL (expected e.g. postgresql://user@host/db)"
        ) from None
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        raise ValueError(
            f"no installed driver handles {parsed.drivername!r} URLs (install its SQLAlchemy "
            "dialect and driver; the extras cover postgresql, mysql, duckdb, bigquery and snowflake)"
        ) from None
    return url


class StateConfig(_Strict):
    """Where alert state and execution history are kept."""

    url: str | None = None
    retention_days: int = Field(default=90, ge=1)

    @field_validator("url")
    @classmethod
    def _url_parses(cls, url: str | None) -> str | None:
        return check_database_url(url) if url is not None else url


class SmtpConfig(_Strict):
    """The SMTP server used by email channels."""

    host: str = "localhost"
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = None
    from_address: str = "sqlsentinel@localhost"
    timeout: Duration = 10.0

    @property
    def effective_port(self) -> int:
        if self.port:
            return self.port
        return {"starttls": 587, "tls": 465, "none": 25}[self.security]

    @classmethod
    def from_env_fallback(cls, env: Mapping[str, str]) -> SmtpConfig:
        """SMTP settings from the SMTP_* variables that the first SQL Sentinel read.

        Used when the file has no ``smtp:`` section (docs/notifications.md).
        """
        values = {name: env.get(f"SMTP_{name}") or None for name in _LEGACY_SMTP}
        port = _legacy_port(values["PORT"] or "587")
        use_tls = _legacy_bool(values["USE_TLS"] or "true")
        username, password = values["USERNAME"], values["PASSWORD"]
        register_secret(password)
        from_address = values["FROM_ADDRESS"]
        if from_address is None:
            # The first SQL Sentinel sent from the login when it was an address.
            from_address = username if username and "@" in username else None
        return cls(
            host=values["HOST"] or "localhost",
            port=port,
            # Port 465 expects TLS from the first byte; STARTTLS there never worked.
            security=("tls" if port == 465 else "starttls") if use_tls else "none",
            username=username,
            password=password,
            **({"from_address": from_address} if from_address else {}),
        )


_LEGACY_SMTP = ("HOST", "PORT", "USERNAME", "PASSWORD", "USE_TLS", "FROM_ADDRESS")


def _legacy_port(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError(
            [ConfigIssue("environment", "SMTP_PORT", f"{text!r} is not a port number")]
        )
    return int(text)


def _legacy_bool(text: str) -> bool:
    word = text.strip().lower()
    if word not in {"true", "1", "yes", "on", "false", "0", "no", "off"}:
        message = f"{text!r} is not true or false"
        raise ConfigError([ConfigIssue("environment", "SMTP_USE_TLS", message)])
    return word in {"true", "1", "yes", "on"}


class _ChannelBase(_Strict):
    name: str | None = None
    timeout: Duration = 10.0

    def destination(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def key(self) -> str:
        """A stable identity for this destination, used to remember deliveries."""
        if self.name:
            return f"{self.channel}:{self.name}"  # type: ignore[attr-defined]
        digest = hashlib.sha256(self.destination().encode()).hexdigest()[:12]
        return f"{self.channel}:{digest}"  # type: ignore[attr-defined]

    @property
    def label(self) -> str:
        """The metrics label: the configured name or the channel type."""
        return self.name or self.channel  # type: ignore[attr-defined]


class EmailChannelConfig(_ChannelBase):
    channel: Literal["email"]
    recipients: list[str] = Field(min_length=1)
    subject: Template = "[{status}] {alert_name}"
    from_address: str | None = None

    @field_validator("recipients")
    @classmethod
    def _addresses(cls, recipients: list[str]) -> list[str]:
        for address in recipients:
            if not re.fullmatch(r"[^@\s]+@[^@\s]+", address):
                raise ValueError(f"{address!r} is not an email address")
        return recipients

    def destination(self) -> str:
        return "email:" + ",".join(sorted(self.recipients))


class SlackChannelConfig(_ChannelBase):
    channel: Literal["slack"]
    webhook_url: str
    slack_channel: str | None = None
    username: str | None = None
    icon_emoji: str | None = None
    text: Template | None = None

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return _check_http_url(url)

    def destination(self) -> str:
        return "slack:" + self.webhook_url + ":" + (self.slack_channel or "")


class WebhookChannelConfig(_ChannelBase):
    channel: Literal["webhook"]
    url: str
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    secret: str | None = None
    signature_header: str = "X-Sentinel-Signature"

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, method: Any) -> Any:
        return method.upper() if isinstance(method, str) else method

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return _check_http_url(url)

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if "\r" in value or "\n" in value:
                raise ValueError(f"the value of header {name!r} holds a line break")
        return headers

    def destination(self) -> str:
        return f"webhook:{self.method}:{self.url}"


class LogChannelConfig(_ChannelBase):
    channel: Literal["log"]
    level: Literal["debug", "info", "warning", "error"] = "warning"

    def destination(self) -> str:
        return f"log:{self.level}"


ChannelConfig = Annotated[
    EmailChannelConfig | SlackChannelConfig | WebhookChannelConfig | LogChannelConfig,
    Field(discriminator="channel"),
]


def _distinct_destinations(channels: list[Any] | None) -> list[Any] | None:
    keys = [c.key for c in channels or []]
    if len(keys) != len(set(keys)):
        raise ValueError(
            "two channels send to the same destination; give them distinct `name:`s"
        )
    return channels


NotifyList = Annotated[list[ChannelConfig], AfterValidator(_distinct_destinations)]


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token


def _check_http_url(url: str) -> str:
    if not re.match(r"https?://[^/\s]+", url):
        raise ValueError(f"{_redact_url(url)!r} is not an http(s) URL")
    return url


def _redact_url(url: str) -> str:
    from sqlsentinel.masking import mask

    return mask(url)


class Defaults(_Strict):
    """Settings applied to every alert that does not set its own."""

    timezone: str = "UTC"
    timeout: Duration = DEFAULT_TIMEOUT
    repeat_interval: Duration | None = None
    notify_on_recovery: bool = True
    notify_on_error: bool = True
    notify: NotifyList = Field(default_factory=list)
    database: str = DEFAULT_DATABASE


class DaemonConfig(_Strict):
    """How the daemon runs alerts."""

    max_concurrency: int = Field(default=4, ge=1, le=256)
    shutdown_grace: Duration = 30.0
    delivery_attempts: int = Field(default=3, ge=1, le=20)


class AlertConfig(_Strict):
    """One alert: a SQL query, when to run it, and whom to tell."""

    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    enabled: bool = True
    schedule: str | None = None
    interval: Duration | None = None
    query: str = Field(min_length=1)
    database: str | None = None
    timezone: str | None = None
    timeout: Duration | None = None
    repeat_interval: Duration | None = None
    notify_on_recovery: bool | None = None
    notify_on_error: bool | None = None
    notify: NotifyList | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _printable(cls, name: str) -> str:
        if name != name.strip() or any(ord(c) < 32 for c in name):
            raise ValueError(
                "must not start or end with spaces or hold control characters"
            )
        return name

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, query: str) -> str:
        if not query.strip():
            raise ValueError("is empty")
        return query

    @field_validator("timezone")
    @classmethod
    def _tz(cls, tz: str | None) -> str | None:
        return _check_timezone(tz) if tz is not None else tz

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str | None) -> str | None:
        if schedule is not None:
            from sqlsentinel.schedule import check_cron

            check_cron(schedule)
        return schedule

    @model_validator(mode="after")
    def _one_trigger(self) -> AlertConfig:
        if self.schedule is None and self.interval is None:
            raise ValueError("set either `schedule` (a cron expression) or `interval`")
        if self.schedule is not None and self.interval is not None:
            raise ValueError("set only one of `schedule` and `interval`")
        return self


def _check_timezone(tz: str) -> str:
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{tz!r} is not a known time zone (e.g. UTC, Europe/Paris)"
        ) from None
    return tz


class SentinelConfig(_Strict):
    """The whole configuration file."""

    database: DatabaseConfig | None = None
    databases: dict[str, DatabaseConfig] = Field(default_factory=dict)
    state: StateConfig = Field(default_factory=StateConfig)
    smtp: SmtpConfig = Field(default_factory=SmtpConfig)
    defaults: Defaults = Field(default_factory=Defaults)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    alerts: list[AlertConfig] = Field(default_factory=list)

    @field_validator("defaults")
    @classmethod
    def _default_tz(cls, defaults: Defaults) -> Defaults:
        _check_timezone(defaults.timezone)
        return defaults


class Alert(BaseModel):
    """An alert with the defaults applied: what the engine works with."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str | None
    enabled: bool
    schedule: str | None
    interval: float | None
    query: str
    database: str
    timezone: str
    timeout: float
    repeat_interval: float | None
    notify_on_recovery: bool
    notify_on_error: bool
    notify: tuple[ChannelConfig, ...]
    labels: dict[str, str]

    @property
    def trigger_description(self) -> str:
        if self.schedule is not None:
            return f"cron {self.schedule} ({self.timezone})"
        return f"every {self.interval:g}s"


class LoadedConfig(BaseModel):
    """A validated configuration, ready to run."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    path: str
    raw: SentinelConfig
    databases: dict[str, DatabaseConfig]
    alerts: tuple[Alert, ...]

    @property
    def enabled_alerts(self) -> tuple[Alert, ...]:
        return tuple(a for a in self.alerts if a.enabled)

    def alert(self, name: str) -> Alert:
        for alert in self.alerts:
            if alert.name == name:
                return alert
        raise KeyError(name)

    def state_url(self, override: str | None = None) -> str:
        """The state database URL: option, then environment, then config, then default."""
        if override:
            return override
        if os.environ.get(DEFAULT_STATE_URL_ENV):
            return os.environ[DEFAULT_STATE_URL_ENV]
        if self.raw.state.url:
            return self.raw.state.url
        return default_state_url()


def default_state_url() -> str:
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return f"sqlite:///{base / 'sqlsentinel' / 'state.db'}"


# ---------------------------------------------------------------------------
# YAML loading with duplicate-key detection


_SafeLoader: type[yaml.SafeLoader] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)  # libyaml when present


class _UniqueKeyLoader(_SafeLoader):  # type: ignore[misc, valid-type]
    """A safe loader that refuses a key given twice in one mapping."""


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    loader.flatten_mapping(node)
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen[key] = True
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=deep)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)

# ---------------------------------------------------------------------------
# Environment substitution

_ENV_REF = re.compile(
    r"\$\$\{|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
)
_SECRET_HINT = re.compile(r"PASS|SECRET|TOKEN|KEY|WEBHOOK|CREDENTIAL", re.IGNORECASE)


MAX_VALUES = 2_000_000  # far above a 20,000-alert file; stops "billion laughs" aliases


def _too_big(data: Any) -> bool:
    """Whether the loaded document, aliases expanded, holds more than MAX_VALUES values."""
    count, stack = 0, [data]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_VALUES:
            return True
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def substitute_env(
    data: Any,
    env: Mapping[str, str],
    path: str = "",
    missing: list[tuple[str, str]] | None = None,
) -> Any:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in every string; ``$${`` is a literal ``${``.

    ``$NAME`` and ``$1`` are left alone. Unset names without a default are appended to
    ``missing`` as (path, name).
    """
    if missing is None:
        missing = []
    if isinstance(data, str):

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name = match["name"]
            if name in env:
                value = env[name]
                if _SECRET_HINT.search(name):
                    register_secret(value)
                return value
            if match["default"] is not None:
                return match["default"]
            missing.append((path, name))
            return ""

        return _ENV_REF.sub(replace, data)
    if isinstance(data, dict):
        return {
            k: substitute_env(v, env, _join(path, str(k)), missing)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [
            substitute_env(v, env, f"{path}[{i}]", missing) for i, v in enumerate(data)
        ]
    return data


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ---------------------------------------------------------------------------
# Loading


def load_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Read, substitute, validate and resolve a configuration file.

    Raises ConfigError listing every problem found.
    """
    file = str(path)
    env = os.environ if env is None else env
    try:
        text = Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(file, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(file, "", f"cannot be read: {exc}")]) from None
    return parse_config(text, file, env)


def parse_config(text: str, file: str, env: Mapping[str, str]) -> LoadedConfig:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            [ConfigIssue(file, where, f"invalid YAML: {problem}")]
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [
                ConfigIssue(
                    file, "", "the top level must be a mapping with an `alerts:` list"
                )
            ]
        )

    if _too_big(data):
        raise ConfigError(
            [
                ConfigIssue(
                    file,
                    "",
                    f"the file expands to more than {MAX_VALUES:,} values "
                    "(YAML aliases repeated inside each other?)",
                )
            ]
        )
    missing: list[tuple[str, str]] = []
    data = substitute_env(data, env, "", missing)
    issues = [
        ConfigIssue(
            file,
            loc,
            f"environment variable {name} is not set (use ${{{name}:-default}} for a default)",
            _alert_name_at(data, loc),
        )
        for loc, name in missing
    ]
    issues.extend(_cross_checks(data, file))
    try:
        raw = SentinelConfig.model_validate(data)
    except ValidationError as exc:
        # A field whose variable is unset was already reported as such; its value is empty.
        unset = {loc for loc, _ in missing}
        issues.extend(
            i for i in _issues_from_pydantic(exc, file, data) if i.location not in unset
        )
        raise ConfigError(issues) from None
    issues.extend(_legacy_smtp_issues(raw, env))
    if issues:
        raise ConfigError(issues)
    _register_config_secrets(raw)
    return LoadedConfig(
        path=file, raw=raw, databases=_databases(raw), alerts=tuple(_resolve(raw))
    )


def _legacy_smtp_issues(
    raw: SentinelConfig, env: Mapping[str, str]
) -> list[ConfigIssue]:
    """Without an ``smtp:`` section, email channels read SMTP_* variables: check them now."""
    channels = [*raw.defaults.notify, *(c for a in raw.alerts for c in a.notify or [])]
    if "smtp" in raw.model_fields_set or not any(
        isinstance(c, EmailChannelConfig) for c in channels
    ):
        return []
    try:
        SmtpConfig.from_env_fallback(env)
    except ConfigError as exc:
        return exc.issues
    return []


def _cross_checks(data: dict[str, Any], file: str) -> list[ConfigIssue]:
    """Checks across sections, made on the raw data so they are reported with all others."""
    issues: list[ConfigIssue] = []
    databases = data.get("databases") if isinstance(data.get("databases"), dict) else {}
    names = set(databases or {})
    if data.get("database") is not None:
        if DEFAULT_DATABASE in names:
            issues.append(
                ConfigIssue(
                    file,
                    "databases.default",
                    "`database:` and `databases.default` both define the default database; keep one",
                )
            )
        names.add(DEFAULT_DATABASE)
    defaults = data.get("defaults") if isinstance(data.get("defaults"), dict) else {}
    default_db = (defaults or {}).get("database", DEFAULT_DATABASE)
    alerts = data.get("alerts") if isinstance(data.get("alerts"), list) else []
    seen: set[str] = set()
    for index, alert in enumerate(alerts or []):
        if not isinstance(alert, dict):
            continue
        loc, name = f"alerts[{index}]", alert.get("name")
        if isinstance(name, str):
            if name in seen:
                issues.append(
                    ConfigIssue(
                        file, f"{loc}.name", "another alert has the same name", name
                    )
                )
            seen.add(name)
        database = alert.get("database") or default_db
        if isinstance(database, str) and database not in names:
            known = ", ".join(sorted(names))
            hint = f"known databases: {known}" if names else "add a `database:` section"
            field = f"{loc}.database" if alert.get("database") else "defaults.database"
            issues.append(
                ConfigIssue(
                    file,
                    field,
                    f"database {database!r} is not defined ({hint})",
                    str(name) if name else None,
                )
            )
    return issues


def _databases(raw: SentinelConfig) -> dict[str, DatabaseConfig]:
    databases = dict(raw.databases)
    if raw.database is not None:
        databases.setdefault(DEFAULT_DATABASE, raw.database)
    return databases


def _resolve(raw: SentinelConfig) -> list[Alert]:
    d = raw.defaults
    alerts = []
    for cfg in raw.alerts:
        alerts.append(
            Alert(
                name=cfg.name,
                description=cfg.description,
                enabled=cfg.enabled,
                schedule=cfg.schedule,
                interval=cfg.interval,
                query=cfg.query,
                database=cfg.database or d.database,
                timezone=cfg.timezone or d.timezone,
                timeout=cfg.timeout or d.timeout,
                repeat_interval=cfg.repeat_interval
                if cfg.repeat_interval is not None
                else d.repeat_interval,
                notify_on_recovery=d.notify_on_recovery
                if cfg.notify_on_recovery is None
                else cfg.notify_on_recovery,
                notify_on_error=d.notify_on_error
                if cfg.notify_on_error is None
                else cfg.notify_on_error,
                notify=tuple(cfg.notify if cfg.notify is not None else d.notify),
                labels=cfg.labels,
            )
        )
    return alerts


def _register_config_secrets(raw: SentinelConfig) -> None:
    from sqlalchemy.engine import make_url

    for db in [raw.database, *raw.databases.values()]:
        if db is not None:
            register_secret(make_url(db.url).password)
    register_secret(raw.smtp.password)
    if raw.state.url:
        register_secret(make_url(raw.state.url).password)
    channels = [*raw.defaults.notify]
    for alert in raw.alerts:
        channels.extend(alert.notify or [])
    for ch in channels:
        if isinstance(ch, SlackChannelConfig):
            register_secret(ch.webhook_url)
        elif isinstance(ch, WebhookChannelConfig):
            register_secret(ch.secret)
            for name, value in ch.headers.items():
                if name.lower() in {
                    "authorization",
                    "x-api-key",
                    "api-key",
                    "x-auth-token",
                }:
                    register_secret(value)


def _alert_name_at(data: Any, loc: str) -> str | None:
    match = re.match(r"alerts\[(\d+)\]", loc)
    if not match or not isinstance(data, dict):
        return None
    alerts = data.get("alerts")
    index = int(match.group(1))
    if (
        isinstance(alerts, list)
        and index < len(alerts)
        and isinstance(alerts[index], dict)
    ):
        name = alerts[index].get("name")
        return str(name) if name is not None else None
    return None


def _issues_from_pydantic(
    exc: ValidationError, file: str, data: Any
) -> list[ConfigIssue]:
    issues = []
    for error in exc.errors(include_url=False):
        loc = ""
        for part in error["loc"]:
            if isinstance(part, int):
                loc += f"[{part}]"
            elif (
                part in {"email", "slack", "webhook", "log"}
                and loc.endswith("]")
                and ".notify" in loc
            ):
                continue  # the discriminator tag pydantic inserts
            elif part.startswith("function-"):
                continue
            else:
                loc = _join(loc, part)
        issues.append(
            ConfigIssue(file, loc, _message(error), _alert_name_at(data, loc))
        )
    return issues


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key (check its spelling)"
    if kind == "missing":
        return "is required"
    if kind == "union_tag_invalid":
        return f"unknown channel {error['input'].get('channel')!r} (expected email, slack, webhook or log)"
    if kind == "union_tag_not_found":
        return "each notify entry needs `channel:` (email, slack, webhook or log)"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


def config_summary(cfg: LoadedConfig) -> dict[str, Any]:
    """A JSON-safe description of the loaded configuration, without secrets."""
    from sqlsentinel.masking import mask

    return {
        "path": cfg.path,
        "databases": {name: mask(db.url) for name, db in cfg.databases.items()},
        "alerts": [
            {
                "name": a.name,
                "enabled": a.enabled,
                "trigger": a.trigger_description,
                "database": a.database,
                "timeout_seconds": a.timeout,
                "channels": [c.label for c in a.notify],
            }
            for a in cfg.alerts
        ],
    }


__all__ = [
    "Alert",
    "ChannelConfig",
    "DatabaseConfig",
    "EmailChannelConfig",
    "LoadedConfig",
    "LogChannelConfig",
    "SentinelConfig",
    "SlackChannelConfig",
    "SmtpConfig",
    "WebhookChannelConfig",
    "load_config",
    "parse_duration",
]

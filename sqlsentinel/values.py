"""Turn values as database drivers return them into JSON-safe values, keeping their meaning.

The rules (documented in docs/query-contract.md):
- None, bool, int (any size), str stay as they are; float stays, except NaN and
  infinities which become the strings "NaN", "Infinity", "-Infinity".
- Decimal becomes its exact decimal string ("12.30"), so no precision is lost.
- datetime becomes ISO 8601; an aware one keeps its offset, a naive one has none.
- date, time become ISO 8601; timedelta becomes a number of seconds.
- UUID becomes its canonical string; bytes become "base64:..." text.
- lists, tuples, sets and mappings are converted item by item; anything else is str().
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import uuid
from collections.abc import Mapping
from typing import Any

JSONValue = Any


def to_json_safe(value: Any) -> JSONValue:
    """Return a JSON-serializable equivalent of a driver value."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, decimal.Decimal):
        if value.is_nan():
            return "NaN"
        if value.is_infinite():
            return "Infinity" if value > 0 else "-Infinity"
        return format(value, "f") if abs(value.as_tuple().exponent) < 50 else str(value)  # type: ignore[arg-type]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "base64:" + base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json_safe(v) for v in value]
    return str(value)


def dumps(value: Any) -> str:
    """Serialize any driver value (or structure of them) to compact JSON text."""
    return json.dumps(to_json_safe(value), ensure_ascii=False, separators=(",", ":"))


def display(value: Any) -> str:
    """Render a value for people (tables, emails, Slack): exact, without JSON quoting."""
    safe = to_json_safe(value)
    if safe is None:
        return "-"
    if isinstance(safe, str):
        return safe
    if isinstance(safe, (dict, list)):
        return json.dumps(safe, ensure_ascii=False)
    return str(safe)

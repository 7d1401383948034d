"""The sample database and starter configuration used by `sqlsentinel init` and examples/."""

from __future__ import annotations

import sqlite3
from pathlib import Path

SAMPLE_SQL = """
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    order_date TEXT NOT NULL,
    customer TEXT NOT NULL,
    amount NUMERIC NOT NULL,
    status TEXT NOT NULL
);
INSERT INTO orders (order_date, customer, amount, status) VALUES
    ('2026-11-30', 'Ada', 1250.00, 'shipped'),
    ('2026-11-30', 'Grace', 830.50, 'shipped'),
    ('2026-12-01', 'Linus', 2100.00, 'pending'),
    ('2026-12-01', 'Barbara', 455.25, 'shipped'),
    ('2026-12-02', 'Edsger', 1789.99, 'pending'),
    ('2026-12-02', 'Frances', 1024.26, 'cancelled');
CREATE TABLE api_requests (
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL,
    status_code INTEGER NOT NULL
);
INSERT INTO api_requests (endpoint, status_code) VALUES
    ('/orders', 200), ('/orders', 200), ('/orders', 201), ('/orders', 500),
    ('/search', 200), ('/search', 200), ('/search', 200), ('/search', 200),
    ('/login', 200), ('/login', 401);
"""

STARTER_CONFIG = """\
# SQL Sentinel starter configuration: every alert is a SQL query that returns a
# `status` column (ALERT or OK), optionally `actual_value`, `threshold` and context.
# Reference: docs/configuration.md
database:
  url: "sqlite:///{db_path}"

defaults:
  timezone: UTC
  timeout: 30s
  notify:
    - channel: log          # prints notifications; swap for email, slack or webhook

alerts:
  - name: revenue_below_target
    description: Total revenue of the sample orders is below 10,000
    schedule: "* * * * *"   # every minute
    query: |
      SELECT CASE WHEN SUM(amount) < 10000 THEN 'ALERT' ELSE 'OK' END AS status,
             SUM(amount) AS actual_value,
             10000 AS threshold,
             COUNT(*) AS order_count
      FROM orders
      WHERE status <> 'cancelled'

  - name: pending_orders_backlog
    description: More than 5 orders are waiting to ship
    schedule: "* * * * *"
    query: |
      SELECT CASE WHEN COUNT(*) > 5 THEN 'ALERT' ELSE 'OK' END AS status,
             COUNT(*) AS actual_value,
             5 AS threshold
      FROM orders
      WHERE status = 'pending'

  - name: api_error_rate
    description: More than 20% of API requests failed
    schedule: "*/2 * * * *"
    repeat_interval: 1h
    query: |
      SELECT CASE WHEN error_rate > 20 THEN 'ALERT' ELSE 'OK' END AS status,
             ROUND(error_rate, 1) AS actual_value,
             20 AS threshold,
             failed, total
      FROM (SELECT 100.0 * SUM(status_code >= 500) / COUNT(*) AS error_rate,
                   SUM(status_code >= 500) AS failed, COUNT(*) AS total
            FROM api_requests)
"""


def make_sample_database(path: Path) -> Path:
    """Create the sample SQLite database at ``path`` (replacing it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as conn:
        conn.executescript(SAMPLE_SQL)
    conn.close()
    return path


def write_starter(directory: Path, *, force: bool = False) -> list[Path]:
    """Write alerts.yaml and sample.db into ``directory``; refuse to overwrite unless forced."""
    config, database = directory / "alerts.yaml", directory / "sample.db"
    for path in (config, database):
        if path.exists() and not force:
            raise FileExistsError(str(path))
    directory.mkdir(parents=True, exist_ok=True)
    make_sample_database(database)
    config.write_text(
        STARTER_CONFIG.format(db_path=database.resolve().as_posix()), encoding="utf-8"
    )
    return [config, database]


if __name__ == "__main__":
    import sys

    make_sample_database(
        Path(sys.argv[1] if len(sys.argv) > 1 else "examples/sample.db")
    )

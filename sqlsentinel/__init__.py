"""SQL Sentinel: SQL alerts from YAML, run on cron schedules, with state and notifications."""

__version__ = "0.1.0"

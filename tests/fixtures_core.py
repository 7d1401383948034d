"""Shared fixtures: config files, sample databases, and the local database servers."""

from __future__ import annotations

import os
import sqlite3
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Google-auth probes the GCE metadata server when it finds no credentials; never here.
os.environ.setdefault("NO_GCE_CHECK", "True")

PG_URL = os.environ.get(
    "SQLSENTINEL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get(
    "SQLSENTINEL_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"
)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a YAML config (dedented) to a file and return its path."""

    def write(text: str, name: str = "alerts.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def sample_db(tmp_path: Path) -> Path:
    """A SQLite database with a `numbers` table holding one row: level = 5."""
    path = tmp_path / "data.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE numbers (name TEXT PRIMARY KEY, value INTEGER)")
        conn.execute("INSERT INTO numbers VALUES ('level', 5)")
    conn.close()
    return path


def set_level(db: Path, value: int) -> None:
    """Change the sample value, so alerts on it fire or resolve."""
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE numbers SET value = ? WHERE name = 'level'", (value,))
    conn.close()


@pytest.fixture
def state_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema on the local server, dropped afterwards; yields a URL using it."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")

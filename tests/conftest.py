"""Shared fixtures: a PostgreSQL server (DATABASE_URL, else the embedded one), a migrated
template database, and a fresh database per test cloned from it (fast, isolated)."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from coalition.database import database_url, psycopg_url
from coalition.migrate import upgrade_to_head

TEMPLATE_LOCK_KEY = 727_001
MIGRATIONS = Path(__file__).resolve().parents[1] / "coalition" / "migrations"


def _with_database(url: str, name: str) -> str:
    base, sep, query = url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}{sep}{query}"


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    with database_url() as url:
        yield url


@pytest.fixture(scope="session")
def template_name(server_url: str) -> str:
    """One migrated template per schema version, made once even with parallel workers."""
    from alembic.script import ScriptDirectory

    from coalition.migrate import _config

    head = ScriptDirectory.from_config(_config()).get_current_head()
    # Named by the migrations' content too: a migration edited under the same revision
    # (on a branch, before it lands) never meets a template built from its old text.
    digest = hashlib.sha256()
    for path in sorted(MIGRATIONS.rglob("*.py")):
        digest.update(path.relative_to(MIGRATIONS).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    name = f"coalition_template_{head}_{digest.hexdigest()[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute("SELECT pg_advisory_lock(%s)", (TEMPLATE_LOCK_KEY,))
        try:
            exists = admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists is None or os.environ.get("COALITION_REBUILD_TEMPLATE"):
                if exists is not None:
                    admin.execute(f'DROP DATABASE "{name}"')
                building = f"{name}_building"
                admin.execute(f'DROP DATABASE IF EXISTS "{building}"')
                admin.execute(f'CREATE DATABASE "{building}"')
                upgrade_to_head(_with_database(server_url, building))
                admin.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
        finally:
            admin.execute("SELECT pg_advisory_unlock(%s)", (TEMPLATE_LOCK_KEY,))
    return name


@pytest.fixture()
def db_url(server_url: str, template_name: str) -> Iterator[str]:
    """A fresh, migrated database for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
    try:
        yield psycopg_url(_with_database(server_url, name))
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests under integration/ and e2e/ need PostgreSQL; mark them so CI can select them.
    A ``large`` test runs only when a ``-m`` expression names it (``-m large``)."""
    large_selected = "large" in (config.getoption("markexpr") or "")
    for item in items:
        if item.get_closest_marker("large") is not None and not large_selected:
            item.add_marker(pytest.mark.skip(reason="large: select with -m large"))
        parts = item.path.parts
        if "integration" in parts or "e2e" in parts:
            item.add_marker(pytest.mark.postgres)

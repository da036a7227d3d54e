"""CLI verbs migrate only when asked: on an empty database, a verb that needs the schema
stops with one line naming the command to run (exit 2) and creates nothing; `coalition
migrate` says from which revision to which; after it, the same verb works."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from coalition.migrate import head_revision

ROOT = Path(__file__).resolve().parents[2]


def _with_database(url: str, name: str) -> str:
    base, sep, query = url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}{sep}{query}"


@pytest.fixture()
def empty_db_url(server_url: str) -> Iterator[str]:
    name = f"cli_migrate_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": db_url}
    return subprocess.run(
        [sys.executable, "-m", "coalition.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _tables(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert row is not None
    return int(row[0])


def test_a_verb_on_an_empty_database_says_to_migrate_and_writes_nothing(
    empty_db_url: str,
) -> None:
    refused = _cli(empty_db_url, "apikey", "list")
    assert refused.returncode == 2, refused
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "coalition migrate" in lines[0], refused.stderr
    assert "Traceback" not in refused.stderr
    assert _tables(empty_db_url) == 0  # nothing created behind the operator's back

    migrated = _cli(empty_db_url, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    said = migrated.stdout + migrated.stderr
    assert head_revision() in said, said

    listed = _cli(empty_db_url, "apikey", "list")
    assert listed.returncode == 0, listed.stderr
    again = _cli(empty_db_url, "migrate")  # nothing to do: says so, changes nothing
    assert again.returncode == 0, again.stderr

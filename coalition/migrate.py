"""Bring a database to the newest schema with Alembic (never ``create_all``), and tell
which revision a database carries without migrating it.

Migrating needs the schema's owner; the app's role (a member of ``coalition_app``) can
only read ``alembic_version``. So the app and the CLI verbs other than ``migrate`` (and
``serve`` and ``demo`` by default) only read the revision, with a plain query: Alembic's
migration context logs two INFO lines each time it is set up, which a readiness probe
would otherwise write on every call.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine

from coalition.database import sqlalchemy_url

_MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS_DIR))
    return config


def upgrade_to_head(database_url: str) -> tuple[str | None, str | None]:
    """Migrate to the newest revision; return the revisions (before, after)."""
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.begin() as conn:
            before = current_revision(conn)
            if before != head_revision():
                config = _config()
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
            return before, current_revision(conn)
    finally:
        engine.dispose()


@cache
def head_revision() -> str | None:
    """The newest revision the code knows (read once: the scripts ship with the code)."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(conn: Connection) -> str | None:
    """The revision the database carries, None for a database never migrated (run it on
    the async engine with ``run_sync``). Read-only, and quiet."""
    exists = conn.execute(sa.text("SELECT to_regclass('alembic_version') IS NOT NULL")).scalar()
    if not exists:
        return None
    revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    return None if revision is None else str(revision)


def database_revision(database_url: str) -> str | None:
    """``current_revision`` of the database at ``database_url``, on a connection of its own."""
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect() as conn:
            return current_revision(conn)
    finally:
        engine.dispose()

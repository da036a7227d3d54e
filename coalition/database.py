"""Where the database is: DATABASE_URL, or the embedded PostgreSQL under ``var/``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def var_dir() -> Path:
    return Path(os.environ.get("COALITION_VAR_DIR", PROJECT_ROOT / "var"))


def psycopg_url(url: str) -> str:
    """psycopg wants plain ``postgresql://``; SQLAlchemy URLs carry a driver suffix."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def sqlalchemy_url(url: str) -> str:
    return "postgresql+psycopg://" + psycopg_url(url)[len("postgresql://") :]


def replica_url() -> str | None:
    """``DATABASE_REPLICA_URL``: a streaming replica the API's reads may use (api.replica)."""
    configured = os.environ.get("DATABASE_REPLICA_URL")
    return psycopg_url(configured) if configured else None


@contextmanager
def read_url() -> Iterator[str]:
    """Where a read-only CLI job (export, prove) reads: the replica if one is configured
    (its answer as of what it has replayed), else the database."""
    replica = replica_url()
    if replica is not None:
        yield replica
        return
    with database_url() as url:
        yield url


@contextmanager
def database_url() -> Iterator[str]:
    """The configured server, or an embedded one started for as long as the block runs."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield psycopg_url(configured)
        return
    from coalition.embedded_pg import embedded_postgres

    with embedded_postgres(var_dir()) as url:
        yield url

"""The API's database: SQLAlchemy's async engine over async psycopg, and one way in.

``run(fn, *args)`` checks out a connection for as long as ``fn`` runs and runs ``fn`` — a
use case or a read written against a synchronous psycopg connection — on the event loop
(see ``_green``). Connections are in autocommit, so each use case owns its transaction
(``with conn.transaction()``, as it does under the CLI) and a read is one statement's
snapshot; a DataLoader batch is one such short-lived checkout.

``job(fn, *args)`` is for the few calls that are CPU-bound rather than waiting on the
database (a settlement run over a period, a PDF statement, a reconciliation file, KPIs):
on the event loop they would stall every till for seconds, so they run in a worker
thread on their own connection, at most ``JOBS_CONCURRENT_MAX`` at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.concurrency import run_in_threadpool

from coalition.api._green import as_sync
from coalition.database import psycopg_url, sqlalchemy_url
from coalition.migrate import current_revision, head_revision

T = TypeVar("T")

CONNECTIONS_MAX = 16
JOBS_CONCURRENT_MAX = 2
CHECKOUT_TIMEOUT_SECONDS = 30.0


class Database:
    def __init__(self, database_url: str, connections_max: int = CONNECTIONS_MAX) -> None:
        self._url = database_url
        self._jobs = asyncio.Semaphore(JOBS_CONCURRENT_MAX)
        self.engine: AsyncEngine = create_async_engine(
            sqlalchemy_url(database_url),
            isolation_level="AUTOCOMMIT",
            pool_size=connections_max,
            max_overflow=0,
            pool_timeout=CHECKOUT_TIMEOUT_SECONDS,
            pool_pre_ping=False,
        )

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async with self.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver: psycopg.AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
            conn = as_sync(driver)
            return await connection.run_sync(lambda _: fn(conn, *args, **kwargs))

    async def is_current(self) -> bool:
        """Reachable, and migrated to the code's newest revision (readiness)."""
        async with self.engine.connect() as connection:
            return await connection.run_sync(current_revision) == head_revision()

    async def job(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def work() -> T:
            with psycopg.connect(psycopg_url(self._url), autocommit=True) as conn:
                return fn(conn, *args, **kwargs)

        async with self._jobs:
            return await run_in_threadpool(work)

    async def close(self) -> None:
        await self.engine.dispose()

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

When PostgreSQL is down or the connection is lost, every way in raises one typed error,
``DatabaseUnavailable`` (the app answers 503 with ``Retry-After``), and ``DatabaseHealth``
logs the outage once: a warning when it starts, an info line when a call succeeds again.
A connection found broken is invalidated, never handed back to the pool, and each
checkout is pre-pinged, so the connections left over from before a restart are replaced
rather than failing a request each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from starlette.concurrency import run_in_threadpool

from coalition.api._green import as_sync
from coalition.api.errors import DatabaseUnavailable
from coalition.api.observability import DATABASE_UNAVAILABLE, DATABASE_UP
from coalition.database import psycopg_url, sqlalchemy_url
from coalition.migrate import current_revision, head_revision

T = TypeVar("T")

CONNECTIONS_MAX = 16
JOBS_CONCURRENT_MAX = 2
CHECKOUT_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 5  # a server that does not answer is down, not slow

_log = logging.getLogger("coalition.api.db")

# SQLSTATEs that say the server is not there for us (whatever the statement): class 08,
# connection exceptions; shutting down, crashed, starting up; no connection slot left.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
_CONNECT_ERRORS = (sqlalchemy.exc.OperationalError, psycopg.OperationalError)


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached (rather than refusing a
    statement: a serialization failure, a lock or statement timeout, a constraint)."""
    if isinstance(exc, DatabaseUnavailable):
        return True
    if isinstance(exc, sqlalchemy.exc.TimeoutError):  # no pooled connection came free
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return exc.orig is not None and is_unavailable(exc.orig)
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        return state is None or state.startswith("08") or state in _UNAVAILABLE_SQLSTATES
    return False


class DatabaseHealth:
    """The outage as the calls see it, logged once: a warning at the first call that
    finds the database unavailable, an info line at the first call that succeeds after.

    So that an outage is not ended by a call that only looked healthy: a call already
    under way when a failure was seen does not end it (it may have run on a connection
    the server had not yet closed), only one started after the last failure; and once a
    connection could not be made, not before one has been made again (until then, the
    calls served on connections already pooled do not tell the server takes new ones).
    Used from the event loop only.
    """

    def __init__(self) -> None:
        self._failures = 0  # calls found unavailable, ever
        self._down_since: float | None = None
        self._refused = 0  # in the current outage
        self._unconnectable = False  # a connection failed to be made, none made since

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def started(self) -> int:
        """A mark to hand back to ``succeeded`` when the call ends well."""
        return self._failures

    def connected(self) -> None:
        """A new connection was made."""
        self._unconnectable = False

    def failed(self, exc: BaseException, *, connecting: bool = False) -> None:
        self._failures += 1
        self._unconnectable = self._unconnectable or connecting
        DATABASE_UNAVAILABLE.inc()
        if self._down_since is not None:
            self._refused += 1
            return
        self._down_since = time.monotonic()
        self._refused = 1
        DATABASE_UP.set(0)
        _log.warning("database unavailable (%s); answering 503 until it is back", _reason(exc))

    def succeeded(self, mark: int) -> None:
        if self._down_since is None or mark != self._failures or self._unconnectable:
            return
        seconds = time.monotonic() - self._down_since
        _log.info(
            "database available again after %.1f s (%d calls refused meanwhile)",
            seconds,
            self._refused,
        )
        self._down_since = None
        DATABASE_UP.set(1)


def _reason(exc: BaseException) -> str:
    """One line, no traceback: the driver's own message, first line only."""
    while isinstance(exc, DatabaseUnavailable | sqlalchemy.exc.DBAPIError):
        cause = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc.__cause__
        if cause is None:
            break
        exc = cause
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class Database:
    def __init__(
        self,
        database_url: str,
        connections_max: int = CONNECTIONS_MAX,
        health: DatabaseHealth | None = None,
    ) -> None:
        self._url = database_url
        self._jobs = asyncio.Semaphore(JOBS_CONCURRENT_MAX)
        self.health = health or DatabaseHealth()
        self.engine: AsyncEngine = create_async_engine(
            sqlalchemy_url(database_url),
            isolation_level="AUTOCOMMIT",
            pool_size=connections_max,
            max_overflow=0,
            pool_timeout=CHECKOUT_TIMEOUT_SECONDS,
            # One round trip per checkout buys this: after a restart, the connections
            # pooled before it are found dead at checkout and the whole pool is renewed
            # (SQLAlchemy invalidates every connection older than the failed ping),
            # instead of each failing the request it is handed to.
            pool_pre_ping=True,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
        )
        event.listen(self.engine.sync_engine, "connect", lambda *_: self.health.connected())

    @asynccontextmanager
    async def _connected(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection; a broken one is invalidated, not returned to the pool,
        and any sign of an outage comes out as ``DatabaseUnavailable``."""
        mark = self.health.started()
        connected = lost = False
        try:
            async with self.engine.connect() as connection:
                connected = True
                try:
                    yield connection
                except DatabaseUnavailable as exc:
                    # Raised and counted elsewhere (the group committer's connection,
                    # say): this one is dropped only if found broken itself.
                    if await _broken(connection):
                        await _invalidate(connection, exc)
                    raise
                except Exception as exc:
                    lost = is_unavailable(exc) or await _broken(connection)
                    if lost:
                        await _invalidate(connection, exc)
                    raise
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            # Whatever stops a connection being made means the database is not there
            # for us (refused, timed out, shutting down, not accepting connections).
            refused = not connected and isinstance(exc, _CONNECT_ERRORS)
            if not (lost or refused or is_unavailable(exc)):
                raise
            self.health.failed(exc, connecting=refused)
            raise DatabaseUnavailable() from exc
        self.health.succeeded(mark)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async with self._connected() as connection:
            raw = await connection.get_raw_connection()
            driver: psycopg.AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
            conn = as_sync(driver)
            return await connection.run_sync(lambda _: fn(conn, *args, **kwargs))

    async def is_current(self) -> bool:
        """Reachable, and migrated to the code's newest revision (readiness)."""
        async with self._connected() as connection:
            return await connection.run_sync(current_revision) == head_revision()

    async def job(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def work() -> T:
            url = psycopg_url(self._url)
            try:
                conn = psycopg.connect(
                    url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
                )
            except psycopg.OperationalError as exc:
                raise DatabaseUnavailable() from exc
            with conn:
                return fn(conn, *args, **kwargs)

        mark = self.health.started()
        async with self._jobs:
            try:
                result = await run_in_threadpool(work)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                # DatabaseUnavailable here is work()'s: no connection could be made.
                connecting = isinstance(exc, DatabaseUnavailable)
                self.health.failed(exc, connecting=connecting)
                if connecting:
                    raise
                raise DatabaseUnavailable() from exc
        self.health.connected()  # the job made its own connection
        self.health.succeeded(mark)
        return result

    async def close(self) -> None:
        await self.engine.dispose()


async def _broken(connection: AsyncConnection) -> bool:
    """Whether psycopg has found the connection's socket dead."""
    if connection.closed or connection.invalidated:
        return False
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    return isinstance(driver, psycopg.AsyncConnection) and driver.broken


async def _invalidate(connection: AsyncConnection, exc: Exception) -> None:
    """Drop the connection: the pool makes a new one instead of resetting this one (a
    reset on a dead socket would log a traceback for every failed request)."""
    if not connection.invalidated and not connection.closed:
        await connection.invalidate(exc)

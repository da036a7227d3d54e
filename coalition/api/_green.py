"""The service layer's synchronous psycopg calls, run on the event loop.

The use cases (and the ledger's write path under them) are written once, against a
synchronous psycopg connection, because the CLI, the demo and the verifier run them
without an event loop. The API runs the very same code on an *async* psycopg connection
from SQLAlchemy's async engine: inside ``AsyncConnection.run_sync`` (a greenlet), every
call below hands its awaitable to the event loop with SQLAlchemy's ``await_only`` and
resumes with the result — so a request waiting on PostgreSQL holds no thread, and no
second, async copy of the journal's rules exists to drift from the first.

Only the part of psycopg's interface the project uses is here (a test runs the journal's
append through it): ``execute``, ``cursor``, ``transaction``, ``pipeline``, ``info`` and
the cursor's fetches and iteration.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Any, cast

import psycopg
from sqlalchemy.util import await_only


class GreenCursor:
    def __init__(self, cursor: psycopg.AsyncCursor[Any]) -> None:
        self._cursor = cursor

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> GreenCursor:
        await_only(self._cursor.execute(query, params, **kwargs))
        return self

    def fetchone(self) -> Any:
        return await_only(self._cursor.fetchone())

    def fetchall(self) -> list[Any]:
        return await_only(self._cursor.fetchall())

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class GreenConnection:
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> GreenCursor:
        return GreenCursor(await_only(self._conn.execute(query, params, **kwargs)))

    def cursor(self) -> GreenCursor:
        return GreenCursor(self._conn.cursor())

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with _entered(self._conn.transaction()):
            yield

    @contextmanager
    def pipeline(self) -> Iterator[None]:
        with _entered(self._conn.pipeline()):
            yield

    @property
    def info(self) -> psycopg.ConnectionInfo:
        return self._conn.info


def as_sync(conn: psycopg.AsyncConnection[Any]) -> psycopg.Connection[Any]:
    """``conn`` with the synchronous interface the service layer is typed against."""
    return cast(psycopg.Connection[Any], GreenConnection(conn))


@contextmanager
def _entered(manager: AbstractAsyncContextManager[Any]) -> Iterator[None]:
    await_only(manager.__aenter__())
    try:
        yield
    except BaseException as exc:
        if not await_only(manager.__aexit__(type(exc), exc, exc.__traceback__)):
            raise
    else:
        await_only(manager.__aexit__(None, None, None))

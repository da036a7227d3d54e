"""What every resolver gets: who is asking, and a way to run a use case on a pooled
connection in a worker thread (the use cases are synchronous psycopg code)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool

from coalition.api.errors import Forbidden, Unauthenticated
from coalition.api_keys import Principal
from coalition.context import Coalition
from coalition.settings import Settings
from ledger.signed_note import Signer

T = TypeVar("T")


@dataclass
class ApiContext:
    principal: Principal | None
    pool: ConnectionPool
    coalition: Coalition
    signer: Signer
    settings: Settings
    request_id: str

    def who(self, *roles: str) -> Principal:
        """The caller, if it holds one of ``roles`` (else a typed GraphQL error)."""
        if self.principal is None:
            raise Unauthenticated()
        if roles and self.principal.role not in roles:
            raise Forbidden()
        return self.principal

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def run() -> T:
            with self.pool.connection() as conn:
                return fn(conn, *args, **kwargs)

        return await run_in_threadpool(run)

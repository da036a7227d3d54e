"""What every resolver gets: who is asking, this request's DataLoaders, and a way to run a
use case or a read on the async engine (``Database.run``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from coalition.api.db import Database
from coalition.api.errors import Forbidden, Unauthenticated
from coalition.api.keycache import ApiKeyCache
from coalition.api.loaders import Loaders
from coalition.api_keys import Principal
from coalition.context import Coalition
from coalition.settings import Settings
from ledger.signed_note import Signer

T = TypeVar("T")


@dataclass
class ApiContext:
    principal: Principal | None
    database: Database
    coalition: Coalition
    tills: Coalition  # the same, its appends group-committed (see api.group_commit)
    signer: Signer
    settings: Settings
    request_id: str
    api_keys: ApiKeyCache | None = None  # this process's cache of key checks
    connection_params: dict[str, Any] | None = None  # a WebSocket's connection_init payload
    loaders: Loaders = field(init=False)

    def __post_init__(self) -> None:
        self.loaders = Loaders(self.database)  # per request: batches never cross callers

    def who(self, *roles: str) -> Principal:
        """The caller, if it holds one of ``roles`` (else a typed GraphQL error)."""
        if self.principal is None:
            raise Unauthenticated()
        if roles and self.principal.role not in roles:
            raise Forbidden()
        return self.principal

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self.database.run(fn, *args, **kwargs)

    async def job(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A CPU-bound call, in a worker thread (see ``Database.job``)."""
        return await self.database.job(fn, *args, **kwargs)

"""What every resolver gets: who is asking, this request's DataLoaders, and a way to run a
use case or a read on the async engine (``Database.run``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from coalition.api.db import Database
from coalition.api.errors import Forbidden, PartnerSuspended, Unauthenticated
from coalition.api.keycache import ApiKeyCache
from coalition.api.loaders import Loaders
from coalition.api.replica import Reader, ReadRouting
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
    routing: ReadRouting | None = None  # reads from a replica (api.replica), if configured
    read_after_lsn: int | None = None  # the request's Coalition-Read-After
    loaders: Loaders = field(init=False)
    reader: Reader = field(init=False)

    def __post_init__(self) -> None:
        routing = self.routing or ReadRouting(self.database, None)
        self.reader = Reader(routing, self.writer, self.read_after_lsn)
        self.loaders = Loaders(self.reader)  # per request: batches never cross callers

    @property
    def writer(self) -> str | None:
        """Whose writes this caller must read back: its partner's (any of its keys), or
        the key's own."""
        if self.principal is None:
            return None
        return self.principal.partner_id or self.principal.key_id

    def who(self, *roles: str, own_records: bool = False) -> Principal:
        """The caller, if it holds one of ``roles`` (else a typed GraphQL error). A
        suspended partner's key passes only where ``own_records`` says the field reads
        the partner's own records (reconciliation); elsewhere ``PARTNER_SUSPENDED``."""
        if self.principal is None:
            raise Unauthenticated()
        if roles and self.principal.role not in roles:
            raise Forbidden()
        if self.principal.suspended and not own_records:
            raise PartnerSuspended()
        return self.principal

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """On the primary: use cases, and reads a write or a decision depends on."""
        return await self.database.run(fn, *args, **kwargs)

    async def read(
        self,
        fn: Callable[..., T],
        *args: Any,
        missing: Callable[[T], bool] | None = None,
        **kwargs: Any,
    ) -> T:
        """A read the replica may answer (api.replica), after this caller's own writes;
        one whose answer is ``missing`` (default: None) is asked of the primary again."""
        return await self.reader.run(fn, *args, missing=missing, **kwargs)

    async def job(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A CPU-bound call, in a worker thread (see ``Database.job``)."""
        return await self.database.job(fn, *args, **kwargs)

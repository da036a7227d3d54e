"""GraphQL subscriptions (graphql-transport-ws): the outbox's events to a connected
partner, resumable from a seq the client names (docs/WEBHOOKS.md, "Subscriptions").

The same events and authorisation as webhooks: a partner key, sent as
``{"Authorization": "Bearer …"}`` in ``connection_init``, receives its own partner's
events and the public ones, nothing else. Limits: ``CONNECTIONS_PER_KEY_MAX`` open
connections per key in each process (more: closed with 4429), a connection with no
subscription running that sends nothing for ``IDLE_SECONDS`` is closed (4408), keys held
to trusted documents are held to them here too. ``events(afterSeq)`` sends every event
after ``afterSeq`` (omitted: from now on), then each new one as it commits, in seq
order with no gaps: seqs are given out in commit order (coalition/outbox.py), so a
client that reconnects with the last seq it saw misses nothing — or, if events after
that seq were pruned (coalition/outbox_retention.py), is refused with ``EVENTS_PRUNED``
naming the oldest seq still kept (an error, then the subscription ends), never skipped
past them in silence; the same for a connected client the pruning overtook.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.types import Info

from coalition import outbox
from coalition.api.context import ApiContext
from coalition.api.errors import ApiError, BadInput, DatabaseUnavailable
from coalition.api.trusted import DocumentRefused
from coalition.api.types import Long
from coalition.api_keys import KeyExpired
from coalition.webhooks import check_types
from ledger.timefmt import format_time_us

CONNECTIONS_PER_KEY_MAX = 4
IDLE_SECONDS = 60.0
POLL_SECONDS = 0.25  # how soon a committed event reaches a connected client
BATCH_MAX = 100  # events read (and queued to the socket) at a time: a bounded queue

Ctx = Info[ApiContext, None]


class EventsPruned(ApiError):
    code = "EVENTS_PRUNED"

    def __init__(self, pruned: outbox.Pruned) -> None:
        super().__init__(
            f"events up to seq {pruned.horizon_seq} were pruned (the outbox keeps"
            f" COALITION_EVENT_RETENTION_DAYS); the oldest available is seq"
            f" {pruned.oldest_seq}: resume with afterSeq {pruned.horizon_seq} or later"
        )
        self.extensions |= {
            "oldestAvailableSeq": str(pruned.oldest_seq),
            "horizonSeq": str(pruned.horizon_seq),
        }


@strawberry.type
class Event:
    seq: Long
    id: str
    type: str
    partner: str | None
    occurred_at: str
    data: JSON


@strawberry.type
class EventSubscription:
    @strawberry.subscription(
        description="Partner: this partner's events (and public ones) after `afterSeq`"
        " (omitted: from now on), then each as it commits, in seq order."
    )
    async def events(
        self, info: Ctx, after_seq: Long | None = None, event_types: list[str] | None = None
    ) -> AsyncGenerator[Event, None]:
        who = info.context.who("partner")
        if event_types is not None and (problem := check_types(event_types)) is not None:
            raise BadInput(problem)
        if after_seq is not None and after_seq < 0:
            raise BadInput("afterSeq: 0 or more")
        cursor = after_seq if after_seq is not None else await info.context.db(outbox.last_seq)
        partner = who.partner_id or ""
        while True:
            batch = await info.context.db(
                outbox.events_since, partner, cursor, event_types, BATCH_MAX
            )
            if isinstance(batch, outbox.Pruned):
                raise EventsPruned(batch)
            for e in batch:
                yield Event(
                    seq=e.seq,
                    id=e.event_id,
                    type=e.event_type,
                    partner=e.partner_id,
                    occurred_at=format_time_us(e.occurred_us),
                    data=JSON(e.payload),
                )
                cursor = e.seq
            if len(batch) < BATCH_MAX:
                await asyncio.sleep(POLL_SECONDS)


class ConnectionSlots:
    """Open connections per key, in this process."""

    def __init__(self) -> None:
        self.open: dict[str, int] = {}

    def take(self, key_id: str) -> bool:
        if self.open.get(key_id, 0) >= CONNECTIONS_PER_KEY_MAX:
            return False
        self.open[key_id] = self.open.get(key_id, 0) + 1
        return True

    def give_back(self, key_id: str) -> None:
        self.open[key_id] -= 1
        if not self.open[key_id]:
            del self.open[key_id]


class EventStreamHandler(BaseGraphQLTransportWSHandler[ApiContext, None]):
    """strawberry's graphql-transport-ws handler, with our authentication at
    ``connection_init``, the per-key and idle limits, and trusted documents."""

    _slot: str | None = None

    async def handle(self) -> None:
        self._last_heard = time.monotonic()
        watchdog = asyncio.create_task(self._close_when_idle())
        try:
            await super().handle()
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            if self._slot is not None:
                self.view.state["ws_slots"].give_back(self._slot)  # type: ignore[attr-defined]
                self._slot = None

    async def _close_when_idle(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, IDLE_SECONDS / 4))
            idle = time.monotonic() - self._last_heard
            if not self.operations and idle > IDLE_SECONDS:
                await self.websocket.close(4408, "idle timeout")
                return

    async def handle_message(self, message: Any) -> None:
        self._last_heard = time.monotonic()
        await super().handle_message(message)

    async def handle_connection_init(self, message: Any) -> None:
        if self.connection_init_received or self.connection_timed_out:
            await super().handle_connection_init(message)  # its refusal
            return
        from coalition.api.app import _principal  # the same check as every HTTP request

        state = self.view.state  # type: ignore[attr-defined]
        payload = message.get("payload") or {}
        header = payload.get("Authorization", payload.get("authorization", ""))
        try:
            principal = (
                await _principal(state["api_keys"], state["database"], header)
                if isinstance(header, str)
                else None
            )
        except DatabaseUnavailable:
            await self.websocket.close(1013, "database unavailable: try again later")
            return
        if isinstance(principal, KeyExpired):  # the right secret of a key past its expiry
            await self.websocket.close(4401, "API_KEY_EXPIRED: the key has expired")
            return
        if principal is None or principal.role != "partner":
            await self.websocket.close(4403, "Forbidden: a partner key is required")
            return
        if not state["ws_slots"].take(principal.key_id):
            await self.websocket.close(4429, "too many connections for this key")
            return
        self._slot = principal.key_id
        self.context.principal = principal
        await super().handle_connection_init(message)

    async def handle_subscribe(self, message: Any) -> None:
        principal = self.context.principal
        payload = message.get("payload")
        if self.connection_acknowledged and principal is not None and isinstance(payload, dict):
            document = self.view.trusted.resolve(  # type: ignore[attr-defined]
                principal.role, payload.get("query"), payload.get("extensions")
            )
            if isinstance(document, DocumentRefused):
                error = {"message": document.message, "extensions": {"code": document.code}}
                refused: Any = {"id": message["id"], "type": "error", "payload": [error]}
                await self.send_message(refused)
                return
            message = {**message, "payload": {**payload, "query": document}}
        await super().handle_subscribe(message)

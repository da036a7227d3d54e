"""Reads from a streaming replica (``DATABASE_REPLICA_URL``), with read-your-writes.

A partner's till writes and then reads its member's balance; its reconciliation reads
all day. Reads that would compete with the tills on the primary — balances, histories,
entries, checkpoints, proofs, balances as of a time — go to a PostgreSQL hot standby,
except when the caller must see something the standby may not have replayed yet:

- **the caller wrote**: after each mutation the app notes the primary's WAL position
  (``pg_current_wal_lsn()``, read after the commit, so at or past its commit record)
  for the caller (in ``api.write_positions``, which every worker process of one
  ``serve`` shares) and answers it in the ``Coalition-Wal-Lsn`` header. That caller's
  reads, on whichever worker, wait at most ``REPLAY_WAIT_SECONDS_MAX`` until the standby
  has replayed past it, and otherwise run on the primary.
- **the caller says so**: a request carrying ``Coalition-Read-After: <lsn>`` (the header a
  write answered, perhaps by another ``serve`` behind the same load balancer, whose
  memory this one does not share) is held to that position the same way.
- **the standby has not got it**: a read whose answer is "not found" (a member enrolled,
  an entry appended, a checkpoint signed a moment ago) is asked of the primary again.
- **the standby cannot answer**: unreachable, or a query cancelled by recovery conflict
  (SQLSTATE 40001 on a standby) — the primary answers, and every read for the next
  ``REPLICA_RETRY_SECONDS``; the outage is logged once.

What is never read from the standby: anything a write is judged on (use cases read on
the primary inside their own transaction), KPIs, key checks. (Settlement runs and
verification read the standby through ``coalition.standby``, by the prefix they need.)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from coalition.api.db import Database
from coalition.api.errors import DatabaseUnavailable
from coalition.api.write_positions import WritePositions
from coalition.wal_position import replayed_lsn, written_lsn

T = TypeVar("T")

REPLAY_WAIT_SECONDS_MAX = 0.5  # past this a read-your-writes read goes to the primary
REPLAY_POLL_SECONDS = 0.005
REPLICA_RETRY_SECONDS = 5.0  # a standby that failed is tried again after this
LSN_HEADER = "coalition-wal-lsn"
READ_AFTER_HEADER = "coalition-read-after"

_log = logging.getLogger("coalition.api.replica")


def _none(result: object) -> bool:
    """The default "not there": a read that found nothing answers None."""
    return result is None


class ReadRouting:
    """One per process: the replica's pool and the write positions of recent writers."""

    def __init__(
        self,
        primary: Database,
        replica: Database | None,
        positions: WritePositions | None = None,
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.positions = positions or WritePositions()
        self._replica_down = False
        # After a failure the standby is left alone a while: an unreachable host costs a
        # connect timeout per read otherwise, and the tills' reads would notice.
        self._down_until = 0.0

    async def wrote(self, writer: str) -> int | None:
        """After ``writer``'s mutation: its position, remembered (None without a replica)."""
        if self.replica is None:
            return None
        lsn = await self.primary.run(written_lsn)
        self.positions.wrote(writer, lsn)
        return lsn

    def _must_see(self, writer: str | None, after_lsn: int | None) -> int | None:
        mine = self.positions.position(writer) if writer is not None else None
        positions = [p for p in (after_lsn, mine) if p is not None]
        return max(positions) if positions else None

    async def run(
        self,
        writer: str | None,
        after_lsn: int | None,
        fn: Callable[..., T],
        *args: Any,
        missing: Callable[[T], bool] = _none,
    ) -> T:
        if self.replica is None or time.monotonic() < self._down_until:
            return await self.primary.run(fn, *args)
        need = self._must_see(writer, after_lsn)
        try:
            if need is not None and not await self._caught_up(self.replica, need):
                return await self.primary.run(fn, *args)
            result = await self.replica.run(fn, *args)
        except (DatabaseUnavailable, psycopg.errors.SerializationFailure) as exc:
            self._note_down(exc)
            return await self.primary.run(fn, *args)
        self._note_up()
        return await self.primary.run(fn, *args) if missing(result) else result

    async def _caught_up(self, replica: Database, need: int) -> bool:
        deadline = time.monotonic() + REPLAY_WAIT_SECONDS_MAX
        while True:
            replayed = await replica.run(replayed_lsn)
            if replayed is None or replayed >= need:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(REPLAY_POLL_SECONDS)

    def _note_down(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + REPLICA_RETRY_SECONDS
        if not self._replica_down:
            _log.warning("replica cannot answer (%s); reading from the primary", exc)
        self._replica_down = True

    def _note_up(self) -> None:
        if self._replica_down:
            _log.info("replica answers again")
        self._replica_down = False

    async def close(self) -> None:
        self.positions.close()
        if self.replica is not None:
            await self.replica.close()


class Reader:
    """One request's way to read: routed for this caller (a ``Database``-like ``run``)."""

    def __init__(self, routing: ReadRouting, writer: str | None, after_lsn: int | None) -> None:
        self._routing, self._writer, self._after = routing, writer, after_lsn

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        missing: Callable[[T], bool] | None = None,
        **kwargs: Any,
    ) -> T:
        call = functools.partial(fn, **kwargs) if kwargs else fn
        return await self._routing.run(
            self._writer, self._after, call, *args, missing=missing or _none
        )

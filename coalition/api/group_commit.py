"""Group commit for the tills: concurrent appends share one transaction and one fsync.

The till mutations (earn, redeem, holds, refunds) each read what they need on their own
connection, then append exactly one entry and own no transaction around it. Here that
append is handed to one committer task per process, which takes whatever has queued up
(up to ``entries_per_batch_max``), appends it through the journal's single write path in
one transaction, and wakes each caller with its own result. Under load, batches grow by
themselves; an entry the rules refuse is refused alone and the rest of its batch goes on
(the journal's own contract). If the database refuses the batch's transaction (text it
cannot store that got past the API's checks, say), the batch is split in halves and each
tried again, down to the one entry at fault, so no caller fails for a neighbour. If the
connection is lost around the commit, the outcome is unknown to all of them, and a retry
with the same reference tells.

The committer has a connection of its own (``database`` here is not the pool the tills'
requests hold while they wait: sharing it would deadlock once every pooled connection
belonged to a caller waiting for the committer). A caller waits at most
``COMMIT_WAIT_SECONDS_MAX``; then, as with a lost connection, the outcome is unknown
and a retry with the same reference tells.

The use cases stay synchronous code: ``GroupCommittedCoalition.append`` runs inside the
greenlet ``Database.run`` provides and waits for the committer with ``await_only``.
"""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
from sqlalchemy.util import await_only

from coalition.api.db import Database
from coalition.context import Coalition, Conn, refusal_for
from coalition.outcomes import Refusal
from ledger.journal import Appended, AppendResult
from ledger.rejections import Rejection
from ledger.requests import EntryRequest

ENTRIES_PER_BATCH_MAX = 256
COMMIT_WAIT_SECONDS_MAX = 30.0

_Waiting = tuple[EntryRequest, "asyncio.Future[AppendResult]"]


class GroupCommitter:
    def __init__(
        self,
        database: Database,
        coalition: Coalition,
        entries_per_batch_max: int = ENTRIES_PER_BATCH_MAX,
    ) -> None:
        self._database = database
        self._journal = coalition.journal
        self._entries_per_batch_max = entries_per_batch_max
        self._queue: asyncio.Queue[_Waiting] | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, request: EntryRequest) -> AppendResult:
        if self._task is None or self._queue is None:  # started on the serving loop
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._run(self._queue), name="group-commit")
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((request, future))
        return await asyncio.wait_for(future, COMMIT_WAIT_SECONDS_MAX)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._database.close()

    async def _run(self, queue: asyncio.Queue[_Waiting]) -> None:
        while True:
            batch = [await queue.get()]
            while len(batch) < self._entries_per_batch_max and not queue.empty():
                batch.append(queue.get_nowait())
            waiting = [(r, f) for r, f in batch if not f.cancelled()]
            if waiting:
                await self._append(waiting)

    async def _append(self, waiting: list[_Waiting]) -> None:
        """Append in one transaction; if the database refuses the batch for something one
        entry carries, split it in halves and try again, so only that entry fails."""
        try:
            results = await self._database.run(self._journal.append, [r for r, _ in waiting])
        except Exception as exc:
            if len(waiting) > 1 and not _lost_connection(exc):
                middle = len(waiting) // 2
                await self._append(waiting[:middle])
                await self._append(waiting[middle:])
                return
            # Each caller gets it: as after a lost connection, a retry with the same
            # reference tells whether its entry was written.
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(waiting, results, strict=True):
            if not future.done():
                future.set_result(result)


def _lost_connection(exc: BaseException) -> bool:
    """The database went away: every half would fail too, so do not split."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (psycopg.OperationalError, psycopg.InterfaceError, OSError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class GroupCommittedCoalition(Coalition):
    """A coalition whose single appends go through a ``GroupCommitter``: only for use cases
    that append one entry and hold no transaction open around it (the tills')."""

    def __init__(self, plain: Coalition, committer: GroupCommitter) -> None:
        self.clock_us = plain.clock_us
        self.journal = plain.journal
        self._committer = committer

    def append(self, conn: Conn, request: EntryRequest) -> Appended | Refusal:
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert idle, "an append group-committed inside a transaction would not be part of it"
        result: AppendResult = await_only(self._committer.submit(request))
        if isinstance(result, Rejection):
            return refusal_for(result)
        return result

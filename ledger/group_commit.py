"""Group commit: many concurrent callers, one transaction (and one fsync) per batch.

A caller hands its request to ``submit`` and waits; one writer thread takes whatever has
queued up (up to ``entries_per_batch_max``), appends it in a single transaction and
wakes each caller with its own result. Under load, batches grow by themselves, so the
durable rate is no longer one commit per call. A batch the database refuses whole is
split in halves and retried, so an entry at fault fails alone.

The writer appends through ``Journal.append_stream``: while one batch is written and
committed, the next is already taken from the queue, loaded and judged.
"""

from __future__ import annotations

import gc
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import psycopg

from ledger.journal import AppendResult, Journal
from ledger.requests import EntryRequest

_STOP = object()


class GroupCommitter:
    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        journal: Journal,
        entries_per_batch_max: int = 1000,
    ) -> None:
        self._connect = connect
        self._journal = journal
        self._entries_per_batch_max = entries_per_batch_max
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self.batch_sizes: list[int] = []
        self._futures: deque[list[Future[Any]]] = deque()  # of the batches taken, in order
        self._stopped = False
        self._thread.start()

    def submit(self, request: EntryRequest, timeout_seconds: float = 30.0) -> AppendResult:
        future: Future[AppendResult] = Future()
        self._queue.put((request, future))
        return future.result(timeout=timeout_seconds)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        gc.freeze()  # what exists by now lives on: the collector need not scan it again
        conn = self._connect()
        try:
            pending = self._journal.append_stream(conn, self._take, self._done)
            while pending:  # the connection broke; these batches were never sent
                conn.close()
                conn = self._connect()
                pending = self._journal.append_stream(conn, self._take, self._done, pending)
        finally:
            conn.close()

    def _take(self, wait: bool) -> list[EntryRequest] | None:
        """The next batch: whatever has queued up, or None (stop, or nothing queued)."""
        if self._stopped:
            return None
        if wait:
            first = self._queue.get()
        else:
            try:
                first = self._queue.get_nowait()
            except queue.Empty:
                return None
        if first is _STOP:
            self._stopped = True
            return None
        batch = [first]
        while len(batch) < self._entries_per_batch_max:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                self._stopped = True
                break
            batch.append(item)
        self.batch_sizes.append(len(batch))
        self._futures.append([future for _, future in batch])
        return [request for request, _ in batch]

    def _done(self, requests: Sequence[EntryRequest], outcome: Any) -> None:
        futures = self._futures.popleft()
        if isinstance(outcome, BaseException):
            self._failed(list(zip(requests, futures, strict=True)), outcome)
            return
        for future, result in zip(futures, outcome, strict=True):
            future.set_result(result)

    def _failed(self, batch: list[tuple[EntryRequest, Future[Any]]], exc: BaseException) -> None:
        """The transaction rolled back: nothing was written. Something one entry carries
        (not a lost connection): halve, so that only that entry fails."""
        if len(batch) > 1 and not _lost(exc):
            with self._connect() as conn:  # the stream's own is mid-stream (idle)
                self._halve(conn, batch)
            return
        for _, future in batch:
            future.set_exception(exc)

    def _halve(
        self, conn: psycopg.Connection[Any], batch: list[tuple[EntryRequest, Future[Any]]]
    ) -> None:
        try:
            results = self._journal.append(conn, [request for request, _ in batch])
        except Exception as exc:  # each caller gets it
            if len(batch) > 1 and not _lost(exc):
                middle = len(batch) // 2
                self._halve(conn, batch[:middle])
                self._halve(conn, batch[middle:])
                return
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)


def _lost(exc: BaseException) -> bool:
    """The database went away: every half would fail too, so do not split."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (psycopg.OperationalError, psycopg.InterfaceError, OSError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False

"""Group commit: many concurrent callers, one transaction (and one fsync) per batch.

A caller hands its request to ``submit`` and waits; one writer thread takes whatever has
queued up (up to ``entries_per_batch_max``), appends it in a single transaction and
wakes each caller with its own result. Under load, batches grow by themselves, so the
durable rate is no longer one commit per call. A batch the database refuses whole is
split in halves and retried, so an entry at fault fails alone.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
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
        self._thread.start()

    def submit(self, request: EntryRequest, timeout_seconds: float = 30.0) -> AppendResult:
        future: Future[AppendResult] = Future()
        self._queue.put((request, future))
        return future.result(timeout=timeout_seconds)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        conn = self._connect()
        try:
            while True:
                first = self._queue.get()
                if first is _STOP:
                    return
                batch = [first]
                while len(batch) < self._entries_per_batch_max:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        self._queue.put(_STOP)
                        break
                    batch.append(item)
                conn = self._append(conn, batch)
        finally:
            conn.close()

    def _append(
        self, conn: psycopg.Connection[Any], batch: list[tuple[EntryRequest, Future[Any]]]
    ) -> psycopg.Connection[Any]:
        self.batch_sizes.append(len(batch))
        try:
            results = self._journal.append(conn, [request for request, _ in batch])
        except Exception as exc:  # the transaction rolled back: nothing was written
            if conn.closed or conn.broken:
                conn = self._connect()
            elif len(batch) > 1:  # something one entry carries: halve, so only it fails
                middle = len(batch) // 2
                conn = self._append(conn, batch[:middle])
                return self._append(conn, batch[middle:])
            for _, future in batch:
                future.set_exception(exc)
            return conn
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)
        return conn

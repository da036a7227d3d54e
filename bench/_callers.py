"""Concurrent load generators: callers of one GroupCommitter, batches, raw INSERT commits.

Each runs for a fixed wall-clock window and counts what completed in it, every call
durable before it returns (synchronous_commit as the server is configured; the facts
print it). Latencies are per call, in seconds.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bench._common import percentile, rate
from bench._workload import transfer, transfers
from ledger.group_commit import GroupCommitter
from ledger.journal import Appended, Journal

RAW_PAYLOAD_BYTES = 300


@dataclass(slots=True)
class Measured:
    count: int
    seconds: float
    latencies_seconds: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return rate(self.count, self.seconds)

    def latency_ms(self, share: float) -> float:
        return 1000 * percentile(self.latencies_seconds, share)

    @property
    def mean_batch(self) -> float:
        return sum(self.batch_sizes) / len(self.batch_sizes) if self.batch_sizes else float("nan")

    def figures(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "seconds": self.seconds,
            "per_second": self.per_second,
            "latency_p50_ms": self.latency_ms(0.50),
            "latency_p99_ms": self.latency_ms(0.99),
            "mean_batch_entries": self.mean_batch if self.batch_sizes else None,
        }


def _run_threads(
    threads_count: int, duration_seconds: float, call: Callable[[int, int], None]
) -> Measured:
    """Call ``call(thread, n)`` in a loop from each thread until the window closes."""
    barrier = threading.Barrier(threads_count + 1)
    counts = [0] * threads_count
    ends = [0.0] * threads_count
    latencies: list[list[float]] = [[] for _ in range(threads_count)]
    failures: list[BaseException] = []
    window: dict[str, float] = {}

    def worker(thread: int) -> None:
        barrier.wait()
        deadline = window["start"] + duration_seconds
        mine = latencies[thread]
        try:
            now = time.perf_counter()
            while now < deadline:
                call(thread, counts[thread])
                after = time.perf_counter()
                mine.append(after - now)
                counts[thread] += 1
                now = after
        except BaseException as exc:  # reported by the caller of _run_threads
            failures.append(exc)
        ends[thread] = time.perf_counter()

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads_count)]
    for w in workers:
        w.start()
    window["start"] = time.perf_counter()
    barrier.wait()
    for w in workers:
        w.join()
    if failures:
        raise failures[0]
    merged = [x for lat in latencies for x in lat]
    return Measured(sum(counts), max(ends) - window["start"], merged)


def single_calls(db_url: str, callers: int, duration_seconds: float, scope: str) -> Measured:
    """``callers`` threads, each submitting one entry at a time to ONE GroupCommitter."""
    committer = GroupCommitter(lambda: psycopg.connect(db_url, autocommit=True), Journal())
    try:
        _expect_appended(committer.submit(transfer(f"{scope}-warm", 0)))
        committer.batch_sizes.clear()

        def call(thread: int, n: int) -> None:
            _expect_appended(committer.submit(transfer(f"{scope}-t{thread:02d}", n)))

        measured = _run_threads(callers, duration_seconds, call)
        measured.batch_sizes = list(committer.batch_sizes)
        return measured
    finally:
        committer.close()


def _expect_appended(result: Any) -> None:
    if not isinstance(result, Appended):
        raise RuntimeError(f"the benchmark entry was rejected: {result}")


def batched(db_url: str, batch_size: int, duration_seconds: float, scope: str) -> Measured:
    """Journal.append with ``batch_size`` entries per call, on one connection."""
    journal = Journal()
    requests = transfers(scope)
    with psycopg.connect(db_url, autocommit=True) as conn:
        start = time.perf_counter()
        deadline = start + duration_seconds
        count, now = 0, start
        latencies: list[float] = []
        while now < deadline:
            batch = [next(requests) for _ in range(batch_size)]
            for result in journal.append(conn, batch):
                _expect_appended(result)
            after = time.perf_counter()
            latencies.append(after - now)
            count += batch_size
            now = after
        return Measured(count, now - start, latencies)


def create_scratch_table(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE bench_scratch (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " payload bytea NOT NULL)"
        )


def raw_commits(db_url: str, connections: int, duration_seconds: float) -> Measured:
    """One ~300-byte INSERT per transaction (autocommit), one connection per thread."""
    payload = os.urandom(RAW_PAYLOAD_BYTES)
    conns = [psycopg.connect(db_url, autocommit=True) for _ in range(connections)]
    try:
        for c in conns:
            c.execute("SELECT 1")

        def call(thread: int, n: int) -> None:
            conns[thread].execute("INSERT INTO bench_scratch (payload) VALUES (%s)", (payload,))

        return _run_threads(connections, duration_seconds, call)
    finally:
        for c in conns:
            c.close()


def process_callers(
    db_url: str,
    callers: int,
    duration_seconds: float,
    scope: str,
    go: Any,
    ready: Any,
    results: Any,
) -> None:
    """One process of the multi-process run: its own GroupCommitter and caller threads.

    Runs in a spawned child; ``go`` (an Event) starts every process at once, and the
    window is reported in wall-clock time so that the parent can merge the processes.
    """
    committer = GroupCommitter(lambda: psycopg.connect(db_url, autocommit=True), Journal())
    try:
        _expect_appended(committer.submit(transfer(f"{scope}-warm", 0)))
        committer.batch_sizes.clear()
        ready.put(os.getpid())
        go.wait()

        def call(thread: int, n: int) -> None:
            _expect_appended(committer.submit(transfer(f"{scope}-t{thread:02d}", n)))

        started_wall = time.time()
        measured = _run_threads(callers, duration_seconds, call)
        results.put(
            {
                "count": measured.count,
                "start_wall": started_wall,
                "end_wall": started_wall + measured.seconds,
                "latencies_seconds": measured.latencies_seconds,
                "batch_sizes": list(committer.batch_sizes),
            }
        )
    finally:
        committer.close()

"""Where an append's time goes: phases of Journal.append, client and server CPU, cProfile.

    .venv/bin/python -m bench.profile_append [--quick]

Not part of run_all: it explains the figures bench.append and bench.side_by_side print.
Phases are timed by wrapping the reads (ledger._store.lock_head, queue_load and
PendingLoad.parse), the judging of a batch (rules, building, encoding, hashing:
journal._Batch.judge) and ledger._store.write (the ledger code is untouched); "commit"
is the rest of the writer's time: COMMIT, its fsync, the lock, the pipeline delivering
the queued statements — in a stream, what the next batch's judging did not overlap.
"gc" is the time the garbage collector ran. CPU comes from /proc: this process (all its
threads) and the server backends connected to the benchmark database.
"""

from __future__ import annotations

import cProfile
import gc
import io
import os
import pstats
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from bench import _callers
from bench._common import (
    Report,
    machine_facts,
    note,
    parse_args,
    print_facts,
    print_table,
    scratch_database,
)
from bench._workload import grow, open_accounts, transfers
from ledger import _store, journal
from ledger.journal import Journal

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


class Phases:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {"load": 0.0, "rules+hash": 0.0, "write": 0.0}
        self.total = 0.0
        self.calls = 0
        self.gc_seconds = 0.0


@contextmanager
def instrumented() -> Iterator[Phases]:
    phases = Phases()
    originals = (
        _store.lock_head,
        _store.queue_load,
        _store.PendingLoad.parse,
        _store.write,
        journal._Batch.judge,
        Journal.append,
        Journal.append_stream,
    )
    lock_head, queue_load, parse, write, judge, append, append_stream = originals

    def timed(name: str, call: Callable[..., Any], count: bool = False) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                seconds = time.perf_counter() - started
                if name == "total":
                    phases.total += seconds
                else:
                    phases.seconds[name] += seconds
                if count:
                    phases.calls += 1

        return wrapper

    gc_started: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started.append(time.perf_counter())
        elif gc_started:
            phases.gc_seconds += time.perf_counter() - gc_started.pop()

    _store.lock_head = timed("load", lock_head)
    _store.queue_load = timed("load", queue_load)
    _store.PendingLoad.parse = timed("load", parse)  # type: ignore[method-assign]
    _store.write = timed("write", write)
    journal._Batch.judge = timed("rules+hash", judge)  # type: ignore[method-assign]
    Journal.append = timed("total", append, count=True)  # type: ignore[method-assign]
    Journal.append_stream = timed("total", append_stream)  # type: ignore[method-assign]
    gc.callbacks.append(on_gc)
    try:
        yield phases
    finally:
        gc.callbacks.remove(on_gc)
        _store.lock_head, _store.queue_load = lock_head, queue_load
        _store.PendingLoad.parse = parse  # type: ignore[method-assign]
        _store.write = write
        journal._Batch.judge = judge  # type: ignore[method-assign]
        Journal.append = append  # type: ignore[method-assign]
        Journal.append_stream = append_stream  # type: ignore[method-assign]
    # "commit": the rest of the writer's time — COMMIT, its fsync, waiting for the lock
    # and the pipeline delivering the queued statements (in a stream, the time the next
    # batch's judging did not cover).
    phases.seconds["commit"] = phases.total - sum(phases.seconds.values())


class ServerCpu:
    """CPU of the server backends serving the benchmark database, sampled while they live.

    A backend's counters vanish with its connection, so a thread keeps the latest
    reading of each; backends born mid-run miss at most one sampling interval.
    """

    def __init__(self, db_url: str, interval_seconds: float = 0.1) -> None:
        self._conn = psycopg.connect(db_url, autocommit=True)
        self._interval_seconds = interval_seconds
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        rows = self._conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchall()
        for (pid,) in rows:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone, or a server we cannot see into
            seconds = (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND  # utime, stime
            self._first.setdefault(pid, seconds)
            self._last[pid] = seconds

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_seconds):
            self._sample()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._conn.close()
        return sum(self._last[pid] - self._first[pid] for pid in self._last)


def _measure(db_url: str, label: str, run: Callable[[], int]) -> dict[str, Any]:
    with instrumented() as phases:
        cpu_before = time.process_time()
        wall_before = time.perf_counter()
        server = ServerCpu(db_url)
        entries = run()
        server_cpu = server.stop()
        wall = time.perf_counter() - wall_before
        client_cpu = time.process_time() - cpu_before
    per_entry_us = {k: 1e6 * v / entries for k, v in phases.seconds.items()}
    result = {
        "label": label,
        "entries": entries,
        "entries_per_second": entries / wall,
        "wall_us_per_entry": 1e6 * wall / entries,
        "client_cpu_us_per_entry": 1e6 * client_cpu / entries,
        "server_cpu_us_per_entry": 1e6 * server_cpu / entries,
        "append_calls": phases.calls,
        "phase_us_per_entry": per_entry_us,
        "gc_us_per_entry": 1e6 * phases.gc_seconds / entries,
    }
    note(f"{label}: {entries / wall:,.0f} entries/s")
    return result


def _batched_run(db_url: str, batch_size: int, seconds: float) -> Callable[[], int]:
    def run() -> int:
        requests = transfers(f"prof-b{batch_size}-{time.monotonic_ns()}")
        j = Journal()
        count = 0
        with psycopg.connect(db_url, autocommit=True) as conn:
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                j.append(conn, [next(requests) for _ in range(batch_size)])
                count += batch_size
        return count

    return run


def _stream_run(db_url: str, batch_size: int, seconds: float) -> Callable[[], int]:
    def run() -> int:
        requests = transfers(f"prof-s{batch_size}-{time.monotonic_ns()}")
        j = Journal()
        count = 0
        deadline = time.perf_counter() + seconds

        def take(wait: bool) -> list[Any] | None:
            if time.perf_counter() >= deadline:
                return None
            return [next(requests) for _ in range(batch_size)]

        def done(batch: Any, outcome: Any) -> None:
            nonlocal count
            if isinstance(outcome, BaseException):
                raise outcome
            count += len(outcome)

        with psycopg.connect(db_url, autocommit=True) as conn:
            j.append_stream(conn, take, done)
        return count

    return run


def _callers_run(db_url: str, callers: int, seconds: float) -> Callable[[], int]:
    def run() -> int:
        scope = f"prof-c{callers}-{time.monotonic_ns()}"
        return _callers.single_calls(db_url, callers, seconds, scope).count

    return run


def main() -> None:
    args = parse_args(__doc__ or "")
    seconds = 1.5 if args.quick else 8.0
    report = Report("profile_append", args.quick)
    with scratch_database() as db:
        report.facts = machine_facts(db.url)
        print_facts(report.facts)
        with psycopg.connect(db.url, autocommit=True) as conn:
            open_accounts(conn, Journal())
            grow(conn, Journal(), 10_000)
        results = [
            _measure(db.url, "Journal.append, 1 entry per call", _batched_run(db.url, 1, seconds)),
            _measure(db.url, "Journal.append, batches of 100", _batched_run(db.url, 100, seconds)),
            _measure(
                db.url, "Journal.append, batches of 1000", _batched_run(db.url, 1000, seconds)
            ),
            _measure(db.url, "append_stream, batches of 1000", _stream_run(db.url, 1000, seconds)),
            _measure(db.url, "single call, 16 callers", _callers_run(db.url, 16, seconds)),
        ]
        profile_text = _profile(db.url, seconds)
    rows = []
    for r in results:
        p = r["phase_us_per_entry"]
        rows.append(
            [
                r["label"],
                f"{r['entries_per_second']:,.0f}",
                f"{r['entries'] / r['append_calls']:.1f}" if r["append_calls"] else "stream",
                f"{r['wall_us_per_entry']:.0f}",
                f"{p['load']:.0f}",
                f"{p['rules+hash']:.0f}",
                f"{p['write']:.0f}",
                f"{p['commit']:.0f}",
                f"{r['client_cpu_us_per_entry']:.0f}",
                f"{r['server_cpu_us_per_entry']:.0f}",
                f"{r['gc_us_per_entry']:.1f}",
            ]
        )
    print_table(
        "µs per entry: wall, phases of Journal.append (in the writer), CPU of client and server",
        [
            "run",
            "entries/s",
            "batch",
            "wall",
            "load",
            "rules+hash",
            "write",
            "commit",
            "client CPU",
            "server CPU",
            "gc",
        ],
        rows,
    )
    print("cProfile of Journal.append, batches of 1000 (top by own time):")
    print(profile_text)
    report.figures = {"runs": results, "cprofile_batch_1000": profile_text}
    report.write()


def _profile(db_url: str, seconds: float) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    _batched_run(db_url, 1000, seconds)()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(20)
    return "\n".join(line for line in out.getvalue().splitlines() if line.strip())


if __name__ == "__main__":
    main()

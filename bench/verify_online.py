"""What the scheduler's ``verify`` job costs: a full online verification of a journal in
the database against an incremental run over the entries appended since the last one.

    .venv/bin/python -m bench.verify_online [--quick]

A journal of N entries (bench._export_gen's mix: earns, spends, holds, money) is appended
through the real write path; then, in turn: ``verify_database`` over all of it (what a
run would cost each time without the incremental mode), ``extend_verified`` over all of
it from the empty tree (the incremental checks alone, for comparison), and
``extend_verified`` over the last ``NEW_ENTRIES`` only (a typical tick: what the job does
every five minutes). Each pass: seconds of wall time, entries/s, and the process's CPU
seconds (on a shared machine, the CPU figure is the fairer one).
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from typing import Any

import psycopg

from bench._common import machine_facts, note, parse_args, print_facts, scratch_database
from bench._export_gen import ExportGenerator
from ledger.journal import Journal
from ledger.verify_db import verify_database
from ledger.verify_extend import EMPTY, extend_verified

NEW_ENTRIES = 1_000
ENTRIES_PER_MEMBER = 20


def main() -> None:
    args = parse_args(__doc__ or "")
    entries_count = 20_000 if args.quick else 200_000
    with scratch_database() as db:
        print_facts(machine_facts(db.url))
        with psycopg.connect(db.url, autocommit=True) as conn:
            appended = _append(conn, entries_count)
            passes: list[tuple[str, int, Callable[[], Any]]] = [
                ("full (verify_database)", appended, lambda: verify_database(conn)),
                (
                    "incremental checks, all entries",
                    appended,
                    lambda: extend_verified(conn, EMPTY, appended),
                ),
            ]
            start = extend_verified(conn, EMPTY, appended - NEW_ENTRIES).tree
            passes.append(
                (
                    f"incremental, last {NEW_ENTRIES:,} entries",
                    NEW_ENTRIES,
                    lambda: extend_verified(conn, start, NEW_ENTRIES),
                )
            )
            print(f"journal: {appended:,} entries; load average {os.getloadavg()[0]:.2f}")
            print(f"{'pass':38} {'entries':>9} {'wall s':>8} {'CPU s':>7} {'entries/s':>10}")
            for name, count, run in passes:
                note(f"pass: {name}")
                wall, cpu = _timed(run)
                print(f"{name:38} {count:>9,} {wall:>8.3f} {cpu:>7.3f} {count / wall:>10,.0f}")


def _append(conn: psycopg.Connection[Any], entries_count: int) -> int:
    note(f"appending about {entries_count:,} entries through Journal.append")
    now = {"us": 0}
    journal = Journal(clock_us=lambda: now["us"])
    generator = ExportGenerator(max(100, entries_count // ENTRIES_PER_MEMBER))
    for batch in generator.batches(entries_count):
        now["us"] = batch.time_us
        journal.append(conn, batch.requests)
    row = conn.execute("SELECT tree_size FROM ledger_chain").fetchone()
    assert row is not None
    return int(row[0])


def _timed(run: Callable[[], Any]) -> tuple[float, float]:
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    run()
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return wall, cpu


if __name__ == "__main__":
    main()

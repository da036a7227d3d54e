"""What many accounts cost the append path, which bench.append (64 accounts) cannot see.

    .venv/bin/python -m bench.accounts [--quick]

Not part of run_all. Two measurements, phases as in bench.profile_append:

1. Batches whose entries each name their own two accounts, against batches sharing 64.
   A batch loads every account it names, and ledger.build.build_entry maps every loaded
   account for every entry, so N entries naming their own accounts cost O(N²) there
   (timed by wrapping ledger.journal's reference to build_entry). The load phase may
   also jump once the server caches a generic plan for the account query (it depends on
   the connection's history; see the report that came with this file).
2. One-entry appends naming two accounts, with few and with many accounts in the
   table: the account query reads all of ledger_account and ledger_balance.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from bench._common import (
    Report,
    machine_facts,
    note,
    parse_args,
    print_facts,
    print_table,
    scratch_database,
)
from bench._workload import open_accounts, transfers
from bench.profile_append import instrumented
from ledger import journal
from ledger.journal import Appended, Journal
from ledger.requests import AccountSpec, EntryRequest, PostingRequest

OPENS_PER_ENTRY = 16


def _wide_name(index: int) -> str:
    return f"wide:{index:06d}"


def _open_wide(conn: psycopg.Connection[Any], j: Journal, count: int, first: int = 0) -> None:
    requests = [
        EntryRequest(
            "open",
            "bench",
            f"open-wide-{first}",
            open_accounts=tuple(
                AccountSpec(_wide_name(i), "PTS", overdraft=True)
                for i in range(first, min(count, first + OPENS_PER_ENTRY))
            ),
        )
        for first in range(first, count, OPENS_PER_ENTRY)
    ]
    for start in range(0, len(requests), 1000):
        results = j.append(conn, requests[start : start + 1000])
        assert all(isinstance(r, Appended) for r in results)


def _wide_transfers(scope: str, accounts_count: int) -> Iterator[EntryRequest]:
    """Each entry moves points between two accounts no other entry of the batch names."""
    number = 0
    while True:
        a, b = (2 * number) % accounts_count, (2 * number + 1) % accounts_count
        yield EntryRequest(
            "transfer",
            scope,
            f"{number:012d}",
            postings=(
                PostingRequest(_wide_name(a), "PTS", -5),
                PostingRequest(_wide_name(b), "PTS", 5),
            ),
        )
        number += 1


@contextmanager
def _build_timer() -> Iterator[list[float]]:
    spent = [0.0]
    # ledger.journal imported the function by name, so that is the reference to wrap.
    namespace = vars(journal)
    original = namespace["build_entry"]

    def timed(*args: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args)
        finally:
            spent[0] += time.perf_counter() - started

    namespace["build_entry"] = timed
    try:
        yield spent
    finally:
        namespace["build_entry"] = original


def _measure(
    conn: psycopg.Connection[Any], requests: Iterator[EntryRequest], batch_size: int, batches: int
) -> dict[str, float]:
    j = Journal()
    with _build_timer() as spent, instrumented() as phases:
        started = time.perf_counter()
        for _ in range(batches):
            results = j.append(conn, [next(requests) for _ in range(batch_size)])
            assert all(isinstance(r, Appended) for r in results)
        seconds = time.perf_counter() - started
    entries = batch_size * batches
    return {
        "entries_per_second": entries / seconds,
        "us_per_entry": 1e6 * seconds / entries,
        "build_entry_us_per_entry": 1e6 * spent[0] / entries,
        **{f"{k}_us_per_entry": 1e6 * v / entries for k, v in phases.seconds.items()},
    }


def main() -> None:
    args = parse_args(__doc__ or "")
    sizes = (100, 1000, 2000) if args.quick else (100, 1000, 2000, 5000)
    report = Report("accounts", args.quick)
    rows: list[tuple[int, str, int, dict[str, float]]] = []
    with scratch_database() as db:
        report.facts = machine_facts(db.url)
        print_facts(report.facts)
        with psycopg.connect(db.url, autocommit=True) as conn:
            j = Journal()
            open_accounts(conn, j)
            wide_count = 2 * max(sizes)
            note(f"opening {wide_count:,} accounts")
            _open_wide(conn, j, wide_count)
            for batch_size in sizes:
                batches = max(1, 5000 // batch_size)
                for label, requests in (
                    ("64 shared accounts", transfers(f"narrow-{batch_size}")),
                    ("2 own accounts per entry", _wide_transfers(f"wide-{batch_size}", wide_count)),
                ):
                    note(f"batches of {batch_size}, {label}")
                    m = _measure(conn, requests, batch_size, batches)
                    distinct = 64 if label.startswith("64") else 2 * batch_size
                    rows.append((batch_size, label, distinct, m))
            singles = []
            for total in (wide_count, 30_000 if args.quick else 100_000):
                if total > wide_count:
                    note(f"opening accounts up to {total:,}")
                    _open_wide(conn, j, total, first=wide_count)
                note(f"one-entry appends with {total:,} accounts in the table")
                calls = 100 if args.quick else 300
                singles.append((total, _measure(conn, transfers(f"single-{total}"), 1, calls)))
    print_table(
        "Journal.append: entries naming shared accounts vs their own (µs per entry)",
        [
            "batch",
            "entries name",
            "accounts loaded",
            "entries/s",
            "µs/entry",
            "load",
            "rules+hash",
            "of which build_entry",
            "write",
            "commit",
        ],
        [
            [
                b,
                label,
                f"{d:,}",
                f"{m['entries_per_second']:,.0f}",
                f"{m['us_per_entry']:.0f}",
                f"{m['load_us_per_entry']:.0f}",
                f"{m['rules+hash_us_per_entry']:.0f}",
                f"{m['build_entry_us_per_entry']:.0f}",
                f"{m['write_us_per_entry']:.0f}",
                f"{m['commit_us_per_entry']:.0f}",
            ]
            for b, label, d, m in rows
        ],
    )
    print_table(
        "Journal.append, one entry naming 2 accounts per call (ms per call)",
        ["accounts in the table", "calls/s", "ms/call", "load", "rules+hash", "write", "commit"],
        [
            [
                f"{total:,}",
                f"{m['entries_per_second']:,.0f}",
                f"{m['us_per_entry'] / 1000:.2f}",
                f"{m['load_us_per_entry'] / 1000:.2f}",
                f"{m['rules+hash_us_per_entry'] / 1000:.2f}",
                f"{m['write_us_per_entry'] / 1000:.2f}",
                f"{m['commit_us_per_entry'] / 1000:.2f}",
            ]
            for total, m in singles
        ],
    )
    report.figures["single_entry_calls"] = [
        {"accounts_in_table": total, **m} for total, m in singles
    ]
    report.figures["runs"] = [
        {"batch": b, "entries_name": label, "accounts_loaded": d, **m} for b, label, d, m in rows
    ]
    report.write()


if __name__ == "__main__":
    main()

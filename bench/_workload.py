"""The append benchmarks' entry: a two-posting transfer between overdraft accounts.

Overdraft accounts keep the rules from ever rejecting (no balance can run short), so the
figures measure the write path, not a workload's rejections. The canonical entry is about
300 bytes, the size of a typical earn or spend.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import psycopg

from bench._common import Progress, note, rate
from ledger.journal import Appended, Journal
from ledger.requests import AccountSpec, EntryRequest, PostingRequest

ACCOUNTS_COUNT = 64
OPENS_PER_ENTRY = 16  # ledger.rules.OPENS_PER_ENTRY_MAX
GROW_BATCH_SIZE = 1000


def account_name(index: int) -> str:
    return f"acct:{index % ACCOUNTS_COUNT:02d}"


def transfer(scope: str, number: int) -> EntryRequest:
    """A unique, always-acceptable two-posting entry (~300 canonical bytes)."""
    amount = 1 + number % 997
    return EntryRequest(
        "transfer",
        scope,
        f"{number:012d}",
        postings=(
            PostingRequest(account_name(number), "PTS", -amount),
            # An offset of 1..63 spreads the pairs and never names the same account twice.
            PostingRequest(
                account_name(number + 1 + (number // ACCOUNTS_COUNT) % 63), "PTS", amount
            ),
        ),
        meta={"store": f"S{number % 5000:04d}"},
    )


def transfers(scope: str) -> Iterator[EntryRequest]:
    return (transfer(scope, n) for n in itertools.count())


def open_accounts(conn: psycopg.Connection[Any], journal: Journal) -> None:
    requests = [
        EntryRequest(
            "open",
            "bench",
            f"open-{first}",
            open_accounts=tuple(
                AccountSpec(account_name(i), "PTS", overdraft=True)
                for i in range(first, first + OPENS_PER_ENTRY)
            ),
        )
        for first in range(0, ACCOUNTS_COUNT, OPENS_PER_ENTRY)
    ]
    _check(journal.append(conn, requests))


def _check(results: list[Any]) -> None:
    rejected = [r for r in results if not isinstance(r, Appended)]
    if rejected:
        raise RuntimeError(f"{len(rejected)} entries rejected, first: {rejected[0]}")


def tree_size(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT tree_size FROM ledger_chain WHERE chain_id = 'main'").fetchone()
    return 0 if row is None else int(row[0])


def grow(
    conn: psycopg.Connection[Any], journal: Journal, target_size: int, scope: str = "grow"
) -> list[dict[str, float]]:
    """Append batches of 1000 until the journal holds ``target_size`` entries.

    Returns the rate of each tenth of the growth, so that a slowdown with size shows.
    """
    start_size = tree_size(conn)
    if start_size >= target_size:
        return []
    requests = transfers(f"{scope}-{start_size}")
    step = max(GROW_BATCH_SIZE, (target_size - start_size) // 10)
    progress = Progress(
        f"growing the journal from {start_size:,} to {target_size:,}: added",
        target_size - start_size,
    )
    series: list[dict[str, float]] = []
    size = start_size
    step_started, step_size = time.perf_counter(), size
    while size < target_size:
        batch = [next(requests) for _ in range(min(GROW_BATCH_SIZE, target_size - size))]
        _check(journal.append(conn, batch))
        size += len(batch)
        progress(size - start_size)
        # A short remainder joins the last tenth rather than being timed on its own.
        full_step = size - step_size >= step and target_size - size >= step // 2
        if full_step or size >= target_size:
            now = time.perf_counter()
            series.append(
                {"size": size, "entries_per_second": rate(size - step_size, now - step_started)}
            )
            step_started, step_size = now, size
    progress.done()
    note(
        "growth rate by tenth (entries/s): "
        + ", ".join(f"{int(s['entries_per_second']):,}" for s in series)
    )
    return series

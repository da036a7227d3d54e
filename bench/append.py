"""Append throughput: single durable calls through group commit, batches, raw commits,
cost against journal size, and the Merkle tree's share of the append path.

    .venv/bin/python -m bench.append [--quick]
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

import psycopg

from bench import _callers
from bench._common import (
    Report,
    SummaryRow,
    fmt_rate,
    machine_facts,
    note,
    parse_args,
    print_facts,
    print_table,
    scratch_database,
)
from bench._workload import grow, open_accounts, tree_size
from ledger import compact_range
from ledger.journal import Journal

SINGLE_CALL_TARGET = 5_000
BATCHED_TARGET = 10_000
TREE_SHARE_TARGET_PERCENT = 10.0
FLAT_TOLERANCE_PERCENT = 20.0  # "flat": the cost at the large size within this of the small
SMALL_SIZE = 10_000
PROCESSES = 2


def main() -> None:
    args = parse_args(__doc__ or "")
    duration_seconds = 1.5 if args.quick else 10.0
    large_size = 100_000 if args.quick else 1_000_000
    report = Report("append", args.quick)
    with scratch_database() as db:
        report.facts = machine_facts(db.url)
        print_facts(report.facts)
        figures = report.figures
        figures["duration_seconds_per_measurement"] = duration_seconds
        journal = Journal()
        with psycopg.connect(db.url, autocommit=True) as conn:
            open_accounts(conn, journal)
            figures["growth_to_small"] = grow(conn, journal, SMALL_SIZE)
            figures["entry_canonical_bytes"] = _entry_bytes(conn)

        note(f"(d) 16 callers at ~{SMALL_SIZE:,} entries")
        small = _single(db.url, 16, duration_seconds, "d-small", conn_size(db.url))

        note("(c) raw durable commits")
        _callers.create_scratch_table(db.url)
        raw = {n: _callers.raw_commits(db.url, n, duration_seconds) for n in (1, 16)}

        note("(a) single calls through one GroupCommitter")
        single = {
            n: _single(db.url, n, duration_seconds, f"a{n}", conn_size(db.url)) for n in (1, 4, 16)
        }
        multi = _multi_process(db.url, 16, duration_seconds)

        note("(b) batches")
        batch_sizes_at = {n: 0 for n in (100, 1000)}
        batches = {}
        for n in batch_sizes_at:
            batch_sizes_at[n] = conn_size(db.url)
            batches[n] = _callers.batched(db.url, n, duration_seconds, f"b{n}")
        figures["batched_journal_size"] = {str(n): size for n, size in batch_sizes_at.items()}

        note(f"(d) growing to {large_size:,}")
        with psycopg.connect(db.url, autocommit=True) as conn:
            figures["growth_to_large"] = grow(conn, journal, large_size)
            size_before_large = tree_size(conn)
        large = _single(db.url, 16, duration_seconds, "d-large", size_before_large)
        batch_large = _callers.batched(db.url, 1000, duration_seconds, "d-large-b1000")

    note("(e) Merkle tree maintenance micro-benchmark")
    tree = _tree_cost(single[16], large_size)

    figures["raw_commits"] = {str(n): m.figures() for n, m in raw.items()}
    figures["single_calls"] = {str(n): m["measured"].figures() for n, m in single.items()}
    figures["single_calls_journal_size"] = {str(n): m["size"] for n, m in single.items()}
    figures["single_calls_16_in_2_processes"] = multi.figures()
    figures["batched"] = {str(n): m.figures() for n, m in batches.items()}
    figures["size_effect"] = {
        "small_size": small["size"],
        "small": small["measured"].figures(),
        "large_size": size_before_large,
        "large": large["measured"].figures(),
        "batched_1000_at_large": batch_large.figures(),
    }
    figures["tree"] = tree
    _print(report, raw, single, multi, batches, small, large, batch_large, tree)
    report.write()


def conn_size(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return tree_size(conn)


def _entry_bytes(conn: psycopg.Connection[Any]) -> float:
    row = conn.execute(
        "SELECT avg(length(canonical)) FROM ledger_entry WHERE kind = 'transfer'"
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else float("nan")


def _single(
    db_url: str, callers: int, duration_seconds: float, scope: str, size: int
) -> dict[str, Any]:
    measured = _callers.single_calls(db_url, callers, duration_seconds, scope)
    note(
        f"  {callers:>2} callers at {size:,} entries: {fmt_rate(measured.per_second)} entries/s,"
        f" mean batch {measured.mean_batch:.1f}"
    )
    return {"measured": measured, "size": size}


def _multi_process(db_url: str, callers: int, duration_seconds: float) -> _callers.Measured:
    """``callers`` spread over PROCESSES processes, each with its own GroupCommitter."""
    context = multiprocessing.get_context("spawn")
    go, ready, results = context.Event(), context.Queue(), context.Queue()
    per_process = callers // PROCESSES
    processes = [
        context.Process(
            target=_callers.process_callers,
            args=(db_url, per_process, duration_seconds, f"a-p{p}", go, ready, results),
        )
        for p in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=120)
    go.set()
    parts = [results.get(timeout=120 + duration_seconds) for _ in processes]
    for process in processes:
        process.join()
    start = min(p["start_wall"] for p in parts)
    end = max(p["end_wall"] for p in parts)
    measured = _callers.Measured(
        sum(p["count"] for p in parts),
        end - start,
        [x for p in parts for x in p["latencies_seconds"]],
        [x for p in parts for x in p["batch_sizes"]],
    )
    note(
        f"  {callers} callers in {PROCESSES} processes: {fmt_rate(measured.per_second)}"
        f" entries/s, mean batch {measured.mean_batch:.1f}"
    )
    return measured


def _tree_cost(single_16: dict[str, Any], start_size: int) -> dict[str, Any]:
    """compact_range.append_many per leaf, in batches the size the append path saw."""
    measured: _callers.Measured = single_16["measured"]
    leaves_count = max(measured.count, 100_000)
    out: dict[str, Any] = {"leaves": leaves_count}
    for label, batch_size in (
        ("single_16_mean_batch", max(1, round(measured.mean_batch))),
        ("batch_1000", 1000),
    ):
        leaves = [os.urandom(32) for _ in range(leaves_count)]
        size = start_size
        # Any hashes serve: append_many's cost depends on the tree's shape, not its content.
        frontier = [os.urandom(32) for _ in range(size.bit_count())]
        started = time.perf_counter()
        for first in range(0, leaves_count, batch_size):
            chunk = leaves[first : first + batch_size]
            frontier, _nodes = compact_range.append_many(frontier, size, chunk)
            size += len(chunk)
        seconds = time.perf_counter() - started
        out[label] = {"batch_size": batch_size, "us_per_entry": 1e6 * seconds / leaves_count}
    return out


def _print(
    report: Report,
    raw: dict[int, _callers.Measured],
    single: dict[int, dict[str, Any]],
    multi: _callers.Measured,
    batches: dict[int, _callers.Measured],
    small: dict[str, Any],
    large: dict[str, Any],
    batch_large: _callers.Measured,
    tree: dict[str, Any],
) -> None:
    print(f"entry size: ~{report.figures['entry_canonical_bytes']:.0f} canonical bytes")
    print(f"each measurement: {report.figures['duration_seconds_per_measurement']} s window\n")
    rows = []
    for n, item in single.items():
        m = item["measured"]
        rows.append(_row(f"single call, {n} caller(s), 1 GroupCommitter", m, item["size"]))
    rows.append(_row(f"single call, 16 callers in {PROCESSES} processes", multi, None))
    for n, m in batches.items():
        rows.append(_row(f"Journal.append, batches of {n}", m, None))
    for n, m in raw.items():
        rows.append(_row(f"raw INSERT+COMMIT, {n} connection(s)", m, None))
    print_table(
        "(a)(b)(c) durable appends",
        ["what", "entries/s", "p50 ms", "p99 ms", "mean batch", "journal size"],
        rows,
    )
    single_16 = single[16]["measured"].per_second
    raw_16 = raw[16].per_second
    best_batch = max(m.per_second for m in batches.values())
    small_us = 1e6 / small["measured"].per_second
    large_us = 1e6 / large["measured"].per_second
    drift_percent = 100 * (large_us - small_us) / small_us
    b1000_small_us = 1e6 / batches[1000].per_second
    b1000_large_us = 1e6 / batch_large.per_second
    print_table(
        "(d) per-append cost against journal size (16 single-call callers)",
        ["journal size", "entries/s", "µs/entry", "batch-1000 µs/entry"],
        [
            [
                f"{small['size']:,}",
                fmt_rate(small["measured"].per_second),
                f"{small_us:.0f}",
                f"{b1000_small_us:.0f} (at {report.figures['batched_journal_size']['1000']:,})",
            ],
            [
                f"{large['size']:,}",
                fmt_rate(large["measured"].per_second),
                f"{large_us:.0f}",
                f"{b1000_large_us:.0f}",
            ],
        ],
    )
    series = report.figures["growth_to_large"]
    growth_rates = [g["entries_per_second"] for g in series]
    print(
        "batches of 1000 while growing to the large size, entries/s by tenth: "
        + ", ".join(fmt_rate(r) for r in growth_rates)
        + "\n"
    )
    tree_single = tree["single_16_mean_batch"]["us_per_entry"]
    mean_batch = tree["single_16_mean_batch"]["batch_size"]
    tree_batch = tree["batch_1000"]["us_per_entry"]
    single_share = 100 * tree_single / (1e6 / single_16)
    batch_share = 100 * tree_batch / b1000_small_us
    print_table(
        "(e) Merkle tree maintenance (compact_range.append_many) per entry",
        ["append path", "append µs/entry", "tree µs/entry", "tree share"],
        [
            [
                f"single call, 16 callers (batches of ~{mean_batch})",
                f"{1e6 / single_16:.1f}",
                f"{tree_single:.2f}",
                f"{single_share:.2f} %",
            ],
            [
                "Journal.append, batches of 1000",
                f"{b1000_small_us:.1f}",
                f"{tree_batch:.2f}",
                f"{batch_share:.2f} %",
            ],
        ],
    )
    ratio = single_16 / raw_16
    print(f"single call at 16 callers / raw commits at 16 connections: {ratio:.2f}x\n")
    report.figures["single_16_over_raw_16"] = ratio
    report.figures["size_drift_percent"] = drift_percent
    report.figures["tree_share_percent"] = {"single_16": single_share, "batch_1000": batch_share}
    s = report.summary
    s.append(
        SummaryRow(
            "Single-call append, 16 callers, 1 GroupCommitter (entries/s)",
            fmt_rate(single_16),
            f"≥ {SINGLE_CALL_TARGET:,}",
            single_16 >= SINGLE_CALL_TARGET,
        )
    )
    s.append(
        SummaryRow(
            "Single-call append, 1 / 4 callers (entries/s)",
            f"{fmt_rate(single[1]['measured'].per_second)} / "
            f"{fmt_rate(single[4]['measured'].per_second)}",
        )
    )
    s.append(
        SummaryRow(
            f"Single-call append, 16 callers in {PROCESSES} processes (entries/s)",
            fmt_rate(multi.per_second),
        )
    )
    s.append(
        SummaryRow(
            "Batched append, 100 / 1000 per call (entries/s)",
            f"{fmt_rate(batches[100].per_second)} / {fmt_rate(batches[1000].per_second)}",
            f"≥ {BATCHED_TARGET:,}",
            best_batch >= BATCHED_TARGET,
        )
    )
    s.append(
        SummaryRow(
            "Raw INSERT+COMMIT, 1 / 16 connections (commits/s)",
            f"{fmt_rate(raw[1].per_second)} / {fmt_rate(raw_16)}",
        )
    )
    s.append(SummaryRow("Single call (16 callers) ÷ raw commits (16 connections)", f"{ratio:.2f}x"))
    s.append(
        SummaryRow(
            f"Per-append cost, 16 callers, at {small['size']:,} → {large['size']:,} entries (µs)",
            f"{small_us:.0f} → {large_us:.0f} ({drift_percent:+.0f} %)",
            "flat",
            abs(drift_percent) <= FLAT_TOLERANCE_PERCENT,
        )
    )
    if growth_rates:
        s.append(
            SummaryRow(
                f"Batches of 1000 while growing to {large['size']:,}: first → last tenth"
                " (entries/s)",
                f"{fmt_rate(growth_rates[0])} → {fmt_rate(growth_rates[-1])}",
            )
        )
    s.append(
        SummaryRow(
            "Merkle maintenance share of append cost (16 callers / batch 1000)",
            f"{single_share:.1f} % / {batch_share:.1f} %",
            "≤ 10 %",
            max(single_share, batch_share) <= TREE_SHARE_TARGET_PERCENT,
        )
    )
    print_table(
        "summary",
        ["metric", "result", "target", "met"],
        [
            [r.metric, r.value, r.target, "" if r.met is None else ("yes" if r.met else "NO")]
            for r in s
        ],
    )


def _row(what: str, m: _callers.Measured, size: int | None) -> list[str]:
    return [
        what,
        fmt_rate(m.per_second),
        f"{m.latency_ms(0.5):.2f}",
        f"{m.latency_ms(0.99):.2f}",
        f"{m.mean_batch:.1f}" if m.batch_sizes else "",
        f"{size:,}" if size is not None else "",
    ]


if __name__ == "__main__":
    main()

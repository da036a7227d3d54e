"""Batch import (coalition.batch_import) side by side with the single-call path and with
the journal's batched append of the very same entries.

    .venv/bin/python -m bench.batch_import [--quick]

Figures, entries/s (never asserted):
- single calls: earns through ``earn.earn_points`` one after the other, one transaction
  each (what a till's call costs without group commit);
- batch import: a 100,000-line file (--quick: 10,000) of earns, redemptions and refunds
  (the mix of tests/integration/test_batch_import.py), appends on a second connection;
- inside Journal.append: the entries/s inside ``Journal.append`` during that import (the
  batched path's own rate for these entries, guards and projections included);
- batched append, 1,000 per call: ``bench.append``'s (b) figure, the ledger's plain
  two-posting transfers, measured in the same run on the same server, before the
  import and after it (the rate the import is held to: docs/BATCH.md §6);
- re-submission of the same file: every line replayed, nothing written.
"""

from __future__ import annotations

import os
import time
from decimal import Decimal
from typing import Any

import psycopg

from bench import _callers
from bench._common import (
    Report,
    fmt_rate,
    machine_facts,
    note,
    parse_args,
    print_facts,
    print_table,
    scratch_database,
)
from bench._workload import open_accounts
from coalition.batch_format import Batch, format_batch, parse_batch
from coalition.batch_import import import_batch
from coalition.context import Coalition
from coalition.earn import earn_points
from coalition.earning import EarningRules
from coalition.members import enroll_member
from coalition.outcomes import Refusal
from coalition.partners import onboard_partner, publish_earning_rules, publish_terms
from ledger import reads
from ledger.journal import Journal
from settlement.terms import PartnerTerms

DAY_US = 86_400_000_000
MEMBERS = 1_000
TERMS = PartnerTerms(
    Decimal("0.01"), Decimal("0.008"), 50, Decimal("0.5"), "monthly", "multilateral"
)


def main() -> None:
    args = parse_args(__doc__ or "")
    lines = 10_000 if args.quick else 100_000
    singles = 2_000 if args.quick else 10_000
    report = Report("batch_import", args.quick)
    with scratch_database() as db:
        report.facts = machine_facts(db.url)
        print_facts(report.facts)
        start_us = time.time_ns() // 1000
        co = Coalition()
        with (
            psycopg.connect(db.url, autocommit=True) as conn,
            psycopg.connect(db.url, autocommit=True) as append_conn,
        ):
            _setup(co, conn, start_us)
            note("batched append: 1,000 transfers a call")
            open_accounts(conn, Journal())
            window_seconds = 3.0 if args.quick else 10.0
            batched = _callers.batched(db.url, 1000, window_seconds, "b1000")
            note(f"single calls: {singles:,} earns")
            single_seconds = _singles(co, conn, singles)
            text = format_batch("csv", "BENCH", "grocer", rows(lines))
            batch = parse_batch(text.encode(), "csv", "grocer")
            assert isinstance(batch, Batch), batch
            note(f"batch import: {lines:,} lines")
            first, append_seconds = _import(co, conn, append_conn, batch)
            size = reads.head(conn).tree_size
            note("re-submission")
            again, _ = _import(co, conn, append_conn, batch)
            assert reads.head(conn).tree_size == size, "a re-submission wrote"
            note("batched append again (the machine may have changed meanwhile)")
            batched_after = _callers.batched(db.url, 1000, window_seconds, "b1000-after")
    figures = {
        "single_calls_per_second": singles / single_seconds,
        "batch_lines": lines,
        "batch_import_lines_per_second": lines / first,
        "inside_journal_append_entries_per_second": lines / append_seconds,
        "batched_append_1000_entries_per_second": batched.per_second,
        "batched_append_1000_after_entries_per_second": batched_after.per_second,
        "resubmission_lines_per_second": lines / again,
        "loadavg_1min_at_end": os.getloadavg()[0],
    }
    report.figures = figures
    print_table(
        "batch import (entries/s)",
        ("path", "entries/s"),
        [
            ("single calls, one transaction each", fmt_rate(figures["single_calls_per_second"])),
            ("batch import (whole use cases)", fmt_rate(figures["batch_import_lines_per_second"])),
            (
                "  of which inside Journal.append",
                fmt_rate(figures["inside_journal_append_entries_per_second"]),
            ),
            (
                "batched append, 1,000 transfers a call",
                fmt_rate(figures["batched_append_1000_entries_per_second"]),
            ),
            (
                "  the same, after the import",
                fmt_rate(figures["batched_append_1000_after_entries_per_second"]),
            ),
            ("re-submission (all replayed)", fmt_rate(figures["resubmission_lines_per_second"])),
        ],
    )
    print(f"load:       {figures['loadavg_1min_at_end']:.2f} (1-minute average at end)")
    report.write()


def rows(n: int) -> list[dict[str, Any]]:
    """Blocks of ten lines, one member each: six earns, two redemptions, refunds of an
    earn and a redemption 150 blocks back (so never in the chunk being formed)."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        block, step = divmod(i, 10)
        member, back = f"B{block % MEMBERS}", (block - 150) * 10
        if step < 6 or (step >= 8 and back < 0):
            out.append(
                {
                    "type": "earn",
                    "ref": f"e{i}",
                    "member": member,
                    "amount": 10_000,
                    "currency": "RUB",
                }
            )
        elif step < 8:
            out.append({"type": "redeem", "ref": f"r{i}", "member": member, "amount": 30})
        elif step == 8:
            out.append(
                {
                    "type": "refund_purchase",
                    "ref": f"f{i}",
                    "target_ref": f"e{back}",
                    "amount": 5_000,
                }
            )
        else:
            out.append(
                {
                    "type": "refund_redemption",
                    "ref": f"g{i}",
                    "target_ref": f"r{back + 6}",
                    "amount": 10,
                }
            )
    return out


def _setup(co: Coalition, conn: psycopg.Connection[Any], start_us: int) -> None:
    rules = EarningRules("RUB", 1, 100, {})
    for partner in ("grocer", "fuel"):
        _ok(onboard_partner(co, conn, partner, partner.title(), "RUB"))
        _ok(publish_terms(co, conn, partner, TERMS, start_us - DAY_US, f"terms-{partner}"))
        _ok(publish_earning_rules(co, conn, partner, rules, start_us - DAY_US, f"rules-{partner}"))
    for m in range(MEMBERS):
        _ok(enroll_member(co, conn, f"B{m}"))


def _singles(co: Coalition, conn: psycopg.Connection[Any], n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        _ok(
            earn_points(
                co,
                conn,
                partner_id="fuel",
                ref_key=f"s{i}",
                purchase_minor=10_000,
                currency="RUB",
                member_id=f"B{i % MEMBERS}",
            )
        )
    return time.perf_counter() - started


def _import(co: Coalition, conn: Any, append_conn: Any, batch: Batch) -> tuple[float, float]:
    """Seconds for the import, and seconds spent inside ``Journal.append``."""
    inside = [0.0]
    plain = co.journal.append

    def timed(c: Any, requests: Any) -> Any:
        started = time.perf_counter()
        try:
            return plain(c, requests)
        finally:
            inside[0] += time.perf_counter() - started

    co.journal.append = timed  # type: ignore[method-assign]
    started = time.perf_counter()
    try:
        results = import_batch(co, conn, batch, append_conn)
    finally:
        co.journal.append = plain  # type: ignore[method-assign]
    seconds = time.perf_counter() - started
    refused = [r for r in results if r.refusal is not None]
    assert not refused, refused[:3]
    return seconds, inside[0]


def _ok(outcome: object) -> None:
    assert not isinstance(outcome, Refusal), outcome


if __name__ == "__main__":
    main()

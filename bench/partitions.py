"""The partitioned journal as it grows: append rate, inclusion proof and balance read
latencies at 1M entries and on to 10M (migration 0021, docs/DESIGN.md "Partitions").

    .venv/bin/python -m bench.partitions [--quick] [--stop-at-unix T]

Grows one journal (by COPY of the rows the journal would write, bench._bulk; or by batches
of 1,000 through ledger.journal.Journal.append with --grow-by-journal), making the range
partitions ahead as the ``partitions`` job does (every 100,000 entries here), and at each
size of SIZES measures, side by side: the append rate over the next 20,000 entries,
inclusion proofs from the database for random entries (p50/p99), the balance read
(``ledger.reads.balance``) and the balance as of a random earlier size
(``reads.balance_as_of_size``, a posting index probe across ranges) for random accounts.
Each step records the machine's CPU shares over it (this process, every postgres
process, the rest, idle): the machine is shared. ``--stop-at-unix`` ends the growth at
that time and writes what was reached. Results go to bench/results/partitions.json
after every size.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path
from typing import Any

import psycopg

from bench._bulk import grow_by_copy
from bench._common import Report, machine_facts, note, percentile, print_facts, scratch_database
from bench._workload import GROW_BATCH_SIZE, grow, open_accounts, transfers, tree_size
from ledger import partitions, proofs, reads
from ledger.journal import Appended, Journal
from ledger.timefmt import now_us
from ledger.verify_db import verify_database

SIZES = (1_000_000, 2_000_000, 4_000_000, 6_000_000, 8_000_000, 10_000_000)
QUICK_SIZES = (20_000, 50_000, 100_000)
WINDOW_ENTRIES = 20_000
SAMPLES = 1_000
ENSURE_EVERY_ENTRIES = 100_000
Conn = psycopg.Connection[Any]


def _cpu_jiffies() -> dict[str, int]:
    """Machine busy and idle jiffies, this process's and every postgres process's."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + values[4]
    pg = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if name.startswith("postgres") or name == "postmaster":
            rest = stat[stat.rindex(")") + 2 :].split()
            pg += int(rest[11]) + int(rest[12])
    own = os.times()
    tick = os.sysconf("SC_CLK_TCK")
    mine = int((own.user + own.system) * tick)
    return {"total": sum(values[:8]), "idle": idle, "postgres": pg, "mine": mine}


def _shares(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    d = {k: after[k] - before[k] for k in before}
    total = max(1, d["total"])
    mine, pg, idle = d["mine"] / total, d["postgres"] / total, d["idle"] / total
    return {
        "this_process": round(mine, 3),
        "postgres": round(pg, 3),
        "other": round(max(0.0, 1 - mine - pg - idle), 3),
        "idle": round(idle, 3),
    }


def _grow_to(conn: Conn, journal: Journal, target: int, by_copy: bool) -> None:
    while tree_size(conn) < target:
        partitions.ensure_ahead(conn)
        step = min(target, tree_size(conn) + ENSURE_EVERY_ENTRIES)
        if by_copy:
            grow_by_copy(conn, step, "bulk")
        else:
            grow(conn, journal, step, scope=f"g{step}")
    partitions.ensure_ahead(conn)


def _append_rate(conn: Conn, journal: Journal, size: int) -> float:
    requests = transfers(f"window-{size}")
    started = time.perf_counter()
    for _ in range(WINDOW_ENTRIES // GROW_BATCH_SIZE):
        results = journal.append(conn, [next(requests) for _ in range(GROW_BATCH_SIZE)])
        assert all(isinstance(r, Appended) for r in results)
    return WINDOW_ENTRIES / (time.perf_counter() - started)


def _timed_ms(calls: list[Any]) -> list[float]:
    out = []
    for call in calls:
        started = time.perf_counter()
        call()
        out.append(1000 * (time.perf_counter() - started))
    return out


def _measure(conn: Conn, journal: Journal, rng: random.Random, samples: int) -> dict[str, Any]:
    before = _cpu_jiffies()
    append_per_second = _append_rate(conn, journal, tree_size(conn))
    latest = tree_size(conn)
    leaves = [rng.randrange(latest) for _ in range(samples)]
    accounts = [f"acct:{rng.randrange(64):02d}" for _ in range(samples)]
    sizes = [rng.randrange(1, latest) for _ in range(samples)]
    at_us = now_us()
    proof_ms = _timed_ms([lambda s=s: proofs.inclusion_proof(conn, s, latest) for s in leaves])
    balance_ms = _timed_ms([lambda a=a: reads.balance(conn, a, at_us) for a in accounts])
    as_of_ms = _timed_ms(
        [
            lambda a=a, n=n: reads.balance_as_of_size(conn, a, n)
            for a, n in zip(accounts, sizes, strict=True)
        ]
    )
    ranges = partitions.ranges(conn, "main")

    def p(values: list[float], share: float) -> float:
        return round(percentile(values, share), 3)

    return {
        "entries": latest,
        "ranges": len(ranges),
        "append_entries_per_second": round(append_per_second),
        "proof_ms_p50": p(proof_ms, 0.5),
        "proof_ms_p99": p(proof_ms, 0.99),
        "balance_ms_p50": p(balance_ms, 0.5),
        "balance_ms_p99": p(balance_ms, 0.99),
        "balance_as_of_ms_p50": p(as_of_ms, 0.5),
        "balance_as_of_ms_p99": p(as_of_ms, 0.99),
        "cpu_shares": _shares(before, _cpu_jiffies()),
        "loadavg_1min": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--stop-at-unix", type=float, default=0.0, help="end growth then")
    parser.add_argument(
        "--grow-by-journal", action="store_true", help="grow by Journal.append, not COPY"
    )
    args = parser.parse_args()
    sizes = QUICK_SIZES if args.quick else SIZES
    samples = 200 if args.quick else SAMPLES
    rng = random.Random(16)
    report = Report("partitions", args.quick)
    report.figures["steps"] = []
    with scratch_database() as db:
        report.facts = machine_facts(db.url)
        print_facts(report.facts)
        journal = Journal()
        with psycopg.connect(db.url, autocommit=True) as conn:
            open_accounts(conn, journal)
            for size in sizes:
                if args.stop_at_unix and time.time() > args.stop_at_unix:
                    note(f"stopped before {size:,}: the time given is up")
                    break
                _grow_to(conn, journal, size, not args.grow_by_journal)
                step = _measure(conn, journal, rng, samples)
                note(str(step))
                report.figures["steps"].append(step)
                report.write()
            defaults = conn.execute("SELECT count(*) FROM ledger_entry__main_default").fetchone()
            report.figures["rows_in_default_partition"] = defaults[0] if defaults else None
            if args.quick:  # the COPY shortcut writes what the journal would: check it all
                verified = verify_database(conn)
                note(f"verify_db: {verified.tree_size:,} entries verified")
                report.figures["verified_entries"] = verified.tree_size
    report.write()


if __name__ == "__main__":
    main()

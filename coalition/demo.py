"""A demo coalition: five partners, a few hundred members, three months of activity.

Everything goes through the journal's one append path (with group commit and several
concurrent callers, as tills would), then the journal is exported and verified, and a
short report says what was done. Re-running adds another run with fresh references.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from coalition._progress import Progress
from ledger import reads
from ledger.export import export_journal
from ledger.group_commit import GroupCommitter
from ledger.journal import Appended, Journal
from ledger.requests import AccountSpec, EntryRequest, HoldRequest, PostingRequest
from ledger.timefmt import now_us
from ledger.verify import verify_export
from ledger.verify_db import verify_database

PARTNERS = ("grocer", "fuel", "airline", "bank", "pharmacy")
DAY_US = 86_400_000_000
EXPIRY_DAYS = 60
CALLERS = 8


@dataclass
class DemoReport:
    entries_appended: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    batches: list[int] = field(default_factory=list)

    def count(self, result: object) -> None:
        if isinstance(result, Appended):
            self.entries_appended += 1
        else:
            code = getattr(result, "code", "error")
            self.rejected[str(code)] = self.rejected.get(str(code), 0) + 1


class _Clock:
    def __init__(self, start_us: int) -> None:
        self.now_us = start_us

    def __call__(self) -> int:
        return self.now_us


def run_demo(
    database_url: str,
    *,
    members: int = 300,
    days: int = 90,
    seed: int = 7,
    out: Callable[[str], None] = print,
) -> DemoReport:
    rng = random.Random(seed)
    run_id = uuid.uuid4().hex[:8]
    with psycopg.connect(database_url, autocommit=True) as conn:
        head = reads.head(conn)
    clock = _Clock(max(now_us() - days * DAY_US, head.last_time_us + 1))
    journal = Journal(clock_us=clock)
    committer = GroupCommitter(lambda: psycopg.connect(database_url, autocommit=True), journal)
    report = DemoReport()
    started = time.monotonic()
    progress = Progress("demo days", days)
    try:
        names = [f"member:{run_id}-{i:04d}" for i in range(members)]
        _submit(committer, [_open_accounts(run_id, names)], report)
        for day in range(days):
            _submit(committer, _one_day(rng, run_id, day, names, clock.now_us), report)
            clock.now_us += DAY_US
            progress(day + 1)
        progress.done()
        _submit(committer, _expire(database_url, run_id, names, clock.now_us), report)
    finally:
        committer.close()
    report.seconds = time.monotonic() - started
    report.batches = committer.batch_sizes
    return report


def _submit(committer: GroupCommitter, requests: list[EntryRequest], report: DemoReport) -> None:
    with ThreadPoolExecutor(CALLERS) as pool:
        for result in pool.map(committer.submit, requests):
            report.count(result)


def _open_accounts(run_id: str, names: list[str]) -> EntryRequest:
    # One entry cannot open more than 16 accounts, so members open with their first earn.
    specs = [AccountSpec(f"partner:{p}:issued", "PTS", overdraft=True) for p in PARTNERS]
    specs += [AccountSpec(f"partner:{p}:redeemed", "PTS", overdraft=True) for p in PARTNERS]
    specs.append(AccountSpec("coalition:breakage", "PTS", overdraft=True))
    return EntryRequest("open_accounts", "demo", f"{run_id}:open", open_accounts=tuple(specs))


def _one_day(
    rng: random.Random, run_id: str, day: int, names: list[str], today_us: int
) -> list[EntryRequest]:
    requests: list[EntryRequest] = []
    for n in range(40):
        member = rng.choice(names)
        partner = rng.choice(PARTNERS)
        key = f"{run_id}:d{day}:{n}"
        roll = rng.random()
        if roll < 0.6 or day == 0:
            points = rng.randint(5, 400)
            requests.append(
                EntryRequest(
                    "earn",
                    f"partner:{partner}",
                    key,
                    meta={"purchase_minor": points * 100, "currency": "EUR"},
                    open_accounts=(AccountSpec(member, "PTS", lot_tracked=True),),
                    postings=(
                        PostingRequest(f"partner:{partner}:issued", "PTS", -points),
                        PostingRequest(
                            member,
                            "PTS",
                            points,
                            lot_origin=partner,
                            lot_expires_us=today_us + EXPIRY_DAYS * DAY_US,
                        ),
                    ),
                )
            )
        elif roll < 0.9:
            points = rng.randint(10, 150)
            requests.append(
                EntryRequest(
                    "redeem",
                    f"partner:{partner}",
                    key,
                    postings=(
                        PostingRequest(member, "PTS", -points),
                        PostingRequest(f"partner:{partner}:redeemed", "PTS", points),
                    ),
                )
            )
        else:
            requests.append(
                EntryRequest(
                    "authorise",
                    f"partner:{partner}",
                    key,
                    hold=HoldRequest(member, "PTS", rng.randint(10, 80), today_us + DAY_US),
                )
            )
    return requests


def _expire(database_url: str, run_id: str, names: list[str], today_us: int) -> list[EntryRequest]:
    requests = []
    with psycopg.connect(database_url) as conn:
        for name in names:
            expired = sum(
                lot.remaining
                for lot in reads.lots(conn, name)
                if lot.expires_us is not None and lot.expires_us <= today_us
            )
            if expired:
                requests.append(
                    EntryRequest(
                        "expire",
                        "coalition",
                        f"{run_id}:expire:{name}",
                        postings=(
                            PostingRequest(name, "PTS", -expired, take_expired=True),
                            PostingRequest("coalition:breakage", "PTS", expired),
                        ),
                    )
                )
    return requests


def demo_and_verify(database_url: str, export_path: Path, out: Callable[[str], None]) -> int:
    report = run_demo(database_url, out=out)
    with psycopg.connect(database_url, autocommit=True) as conn:
        summary = export_journal(conn, export_path, progress=Progress("export"))
        t = time.monotonic()
        online = verify_database(conn, progress=Progress("verify (database)"))
        online_seconds = time.monotonic() - t
    t = time.monotonic()
    offline = verify_export(str(export_path), progress=Progress("verify (export)"))
    offline_seconds = time.monotonic() - t
    batches = report.batches or [0]
    out("")
    out("Demo coalition: " + ", ".join(PARTNERS))
    out(
        f"  entries appended this run : {report.entries_appended:,} "
        f"in {report.seconds:.1f} s with {CALLERS} concurrent callers"
    )
    out(
        f"  group-commit batches      : {len(batches):,} (mean {sum(batches) / len(batches):.1f},"
        f" max {max(batches)} entries)"
    )
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(report.rejected.items())) or "none"
    out(f"  rejected (typed, nothing written): {rejected}")
    out(f"  journal size              : {summary.tree_size:,} entries")
    out(f"  export                    : {export_path} ({summary.bytes_written:,} bytes)")
    out(
        f"  verified in the database  : {online.tree_size:,} entries in {online_seconds:.2f} s"
        " (hashes, links, rules, postings, balances, lots, holds, Merkle nodes, head)"
    )
    out(f"  verified offline (export) : {offline.tree_size:,} entries in {offline_seconds:.2f} s")
    out(f"  Merkle root (RFC 6962)    : {offline.root_hash.hex()}")
    assert offline.root_hash == online.root_hash
    return 0

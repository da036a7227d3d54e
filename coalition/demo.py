"""The demo coalition: five partners, a few hundred members, three months of activity.

Everything goes through the coalition's use cases and so through the journal's one
append path, from eight concurrent "tills". Then the points past expiry are swept to
breakage, the KPIs are printed, a checkpoint is signed, and the journal is exported and
verified — in the database and offline against the checkpoint. Each run adds a fresh
set of partners and members (a run id keeps their names apart).
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from coalition import reports
from coalition._progress import Progress
from coalition.banking import make_iban
from coalition.context import Coalition
from coalition.earn import bonus_points, earn_points
from coalition.earning import EarningRules
from coalition.expiry import expire_points
from coalition.members import enroll_member, link_card
from coalition.outcomes import Refusal
from coalition.partners import (
    onboard_partner,
    publish_earning_rules,
    publish_terms,
    set_expiry_policy,
    set_tier_policy,
)
from coalition.redeem import authorise, capture, redeem_points
from coalition.refunds import refund_purchase
from coalition.settle import (
    approve,
    clearing_account,
    compute,
    confirm_payment,
    payment_file,
    set_bank_account,
    statement,
)
from coalition.tiers import Tier, TierPolicy
from ledger import checkpoint_log, reads
from ledger.checkpoint import open_checkpoint
from ledger.export import export_journal
from ledger.signed_note import Signer, format_vkey
from ledger.timefmt import format_time_us, now_us
from ledger.verify import check_against_known, verify_export
from ledger.verify_db import verify_database
from settlement.terms import PartnerTerms

PARTNERS = ("grocer", "fuel", "airline", "bank", "pharmacy")
DAY_US = 86_400_000_000
TILLS = 8
OPERATIONS_PER_DAY = 45


@dataclass
class DemoReport:
    run: str = ""
    operations: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    start_us: int = 0
    end_us: int = 0

    def count(self, outcome: object) -> None:
        self.operations += 1
        if isinstance(outcome, Refusal):
            self.refused[outcome.code.value] = self.refused.get(outcome.code.value, 0) + 1


class _Clock:
    def __init__(self, start_us: int) -> None:
        self.now_us = start_us

    def __call__(self) -> int:
        return self.now_us


def run_demo(database_url: str, *, members: int = 300, days: int = 90, seed: int = 7) -> DemoReport:
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:6]
    with psycopg.connect(database_url, autocommit=True) as conn:
        last_us = reads.head(conn).last_time_us
    clock = _Clock(max(now_us() - days * DAY_US, last_us + 1))
    co = Coalition(clock_us=clock)
    report = DemoReport(run=run, start_us=clock.now_us)
    started = time.monotonic()
    partners = [f"{name}-{run}" for name in PARTNERS]
    names = [f"M{run}-{i:04d}" for i in range(members)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        _set_up(co, conn, run, partners, names, clock.now_us)
    local = threading.local()

    def connection() -> psycopg.Connection[Any]:
        if not hasattr(local, "conn"):
            local.conn = psycopg.connect(database_url, autocommit=True)
        return local.conn  # type: ignore[no-any-return]

    progress = Progress("demo days", days)
    history: list[tuple[str, str, str]] = []  # (partner, member, earn ref) for refunds
    with ThreadPoolExecutor(TILLS) as tills:
        for day in range(days):
            ops = [
                _operation(rng, run, day, n, partners, names, history)
                for n in range(OPERATIONS_PER_DAY)
            ]
            for outcome in tills.map(lambda op: op(co, connection()), ops):
                report.count(outcome)
            clock.now_us += DAY_US
            progress(day + 1)
        tills.map(lambda _: connection().close(), range(TILLS))
    progress.done()
    with psycopg.connect(database_url, autocommit=True) as conn:
        expire_points(co, conn, as_of_us=clock.now_us, progress=Progress("expiry", None))
    report.seconds = time.monotonic() - started
    report.end_us = clock.now_us
    return report


def _set_up(
    co: Coalition,
    conn: psycopg.Connection[Any],
    run: str,
    partners: list[str],
    names: list[str],
    now: int,
) -> None:
    # Minor units per point: issued at 0.50 RUB, reimbursed at 0.95 RUB; a 1.5% fee.
    terms = PartnerTerms(Decimal(50), Decimal(95), 150, Decimal("0.5"), "monthly", "multilateral")
    rules = EarningRules("RUB", 1, 10_000, {"fresh": Decimal(2), "tobacco": Decimal(0)})
    for number, partner in enumerate(partners):
        _ok(onboard_partner(co, conn, partner, f"{partner.split('-')[0].title()} LLC", "RUB"))
        iban = make_iban("DE", f"{37040044 + number:08d}{int(run, 16) % 10**10:010d}")
        _ok(
            set_bank_account(
                co,
                conn,
                partner,
                iban=iban,
                bic="COBADEFFXXX",
                name=f"{partner.split('-')[0].title()} LLC",
                ref_key=f"bank:{partner}",
            )
        )
        _ok(publish_terms(co, conn, partner, terms, now, f"terms:{partner}:1"))
        _ok(publish_earning_rules(co, conn, partner, rules, now, f"rules:{partner}:1"))
    _ok(set_expiry_policy(co, conn, 2, f"expiry:{run}"))
    vip = TierPolicy(
        "RUB", 30, (Tier("base", 0, Decimal(1)), Tier("vip", 1_000_000, Decimal("1.5")))
    )
    _ok(set_tier_policy(co, conn, vip, f"tiers:{run}"))
    for i, member in enumerate(names):
        _ok(enroll_member(co, conn, member))
        _ok(link_card(co, conn, member, partners[0], f"{run}-{i:06d}"))
        if i % 10 == 0:
            _ok(
                bonus_points(
                    co,
                    conn,
                    issuer="coalition",
                    member_id=member,
                    points=100,
                    reason="welcome",
                    ref_key=f"welcome:{member}",
                )
            )


def _settle(
    conn: psycopg.Connection[Any], signer: Signer, report: DemoReport, out_dir: Path
) -> str:
    """Finance closes the demo period: compute, approve (a second person), pay, file."""
    co = Coalition()
    run = compute(
        co, conn, signer, period=f"demo-{report.run}", computed_by="alice@finance", calendar=False
    )
    assert not isinstance(run, Refusal), run
    _ok(approve(co, conn, run.run_id, "bob@finance"))
    payments = json.loads(run.run_bytes)["payments"]
    for payment in payments:
        _ok(confirm_payment(co, conn, run.run_id, payment["end_to_end_id"], "bob@finance"))
    partners = sorted(
        p["party"] for p in json.loads(run.run_bytes)["positions"] if p["party"] != "coalition"
    )
    first_partner = partners[0] if partners else None
    written = []
    if first_partner is not None:
        for fmt in ("pdf", "csv", "json"):
            content = statement(conn, run.run_id, first_partner, fmt)
            assert content is not None
            path = out_dir / f"statement-{first_partner}.{fmt}"
            path.write_bytes(content)
            written.append(path.name)
    pain = payment_file(
        conn, run.run_id, clearing_account(demo=True), now_us(), format_time_us(now_us())[:10]
    )
    if isinstance(pain, bytes):  # a run where the coalition pays nobody has no file
        (out_dir / "pain001.xml").write_bytes(pain)
        written.append("pain001.xml")
    return (
        f"run {run.run_id}: {len(payments)} payments, approved and paid; "
        f"{', '.join(written)} in {out_dir}"
    )


def _ok(outcome: object) -> None:
    assert not isinstance(outcome, Refusal), outcome


Operation = Callable[[Coalition, psycopg.Connection[Any]], object]


def _operation(
    rng: random.Random,
    run: str,
    day: int,
    n: int,
    partners: list[str],
    names: list[str],
    history: list[tuple[str, str, str]],
) -> Operation:
    member = rng.choice(names)
    # Grocer, fuel and bank issue most points; the airline and the pharmacy are where
    # they are mostly spent — so some partners are owed money and the netting shows.
    earn_at = rng.choices(partners, weights=(35, 30, 5, 25, 5))[0]
    spend_at = rng.choices(partners, weights=(10, 10, 45, 10, 25))[0]
    key = f"{run}:{day}:{n}"
    roll = rng.random()
    if roll < 0.55:
        rub = rng.choice((150, 400, 900, 2_500, 7_000, 15_000))
        category = rng.choice((None, None, "fresh", "tobacco"))
        history.append((earn_at, member, key))
        return lambda co, conn: earn_points(
            co,
            conn,
            partner_id=earn_at,
            ref_key=key,
            purchase_minor=rub * 100,
            currency="RUB",
            member_id=member,
            category=category,
        )
    if roll < 0.85:
        points = rng.choice((10, 25, 50, 120))
        return lambda co, conn: redeem_points(
            co, conn, partner_id=spend_at, ref_key=key, points=points, member_id=member
        )
    if roll < 0.95:
        points = rng.choice((20, 60))
        share = rng.choice((1, 2))

        def authorise_then_capture(co: Coalition, conn: psycopg.Connection[Any]) -> object:
            hold = authorise(
                co, conn, partner_id=spend_at, ref_key=key, points=points, member_id=member
            )
            if isinstance(hold, Refusal):
                return hold
            return capture(
                co,
                conn,
                partner_id=spend_at,
                ref_key=f"{key}:capture",
                hold_seq=hold.hold_seq,
                points=points // share,
            )

        return authorise_then_capture
    if history:
        shop, _buyer, earn_key = rng.choice(history)
        return lambda co, conn: refund_purchase(
            co,
            conn,
            partner_id=shop,
            ref_key=f"{key}:rf",
            earn_ref_key=earn_key,
            refund_minor=5_000,
        )
    return lambda co, conn: None


def demo_and_verify(
    database_url: str, out_dir: Path, signer: Signer, out: Callable[[str], None]
) -> int:
    report = run_demo(database_url)
    export_path = out_dir / "journal.jsonl"
    checkpoint_path = out_dir / "checkpoint.txt"
    with psycopg.connect(database_url, autocommit=True) as conn:
        k = reports.kpis(conn, report.start_us, report.end_us + 1)
        settled = _settle(conn, signer, report, out_dir)
        stored = checkpoint_log.sign_now(conn, signer, now_us())
        checkpoint_path.write_bytes(stored.signed_note)
        summary = export_journal(conn, export_path, progress=Progress("export"))
        t = time.monotonic()
        online = verify_database(conn, progress=Progress("verify (database)"))
        online_seconds = time.monotonic() - t
    cp = open_checkpoint(stored.signed_note, signer.verifier())
    t = time.monotonic()
    offline = verify_export(str(export_path), Progress("verify (export)"), [cp.tree_size])
    check_against_known(offline, cp.tree_size, cp.root_hash)
    offline_seconds = time.monotonic() - t
    refused = ", ".join(f"{c} {n}" for c, n in sorted(report.refused.items())) or "none"
    out("")
    out(
        f"Demo coalition ({format_time_us(report.start_us)[:10]} → "
        f"{format_time_us(report.end_us)[:10]}): {', '.join(PARTNERS)}"
    )
    out(
        f"  operations     {report.operations:,} from {TILLS} concurrent tills in "
        f"{report.seconds:.1f} s; refused (typed, nothing written): {refused}"
    )
    out(
        f"  members        {k.members_enrolled:,} enrolled, {k.members_active:,} active; "
        f"{k.partners_active} partners active"
    )
    avg = ", ".join(f"{v / 100:,.2f} {c}" for c, v in k.average_purchase_minor.items())
    out(
        f"  purchases      {k.purchases:,}, {k.purchase_frequency:.2f} per active member, "
        f"average {avg}"
    )
    out(
        f"  points         issued {k.points_issued:,}, redeemed {k.points_redeemed:,} "
        f"({k.redemption_rate:.1%}), expired {k.points_expired:,} ({k.breakage_rate:.1%})"
    )
    out("  flow (issuer → redeemed at, points):")
    issuers = sorted({i for i, _ in k.flow_points})
    shops = sorted({s for _, s in k.flow_points})
    width = max([len(s.split("-")[0]) for s in shops] + [8])
    out("    " + " " * 10 + "".join(f"{s.split('-')[0]:>{width + 1}}" for s in shops))
    for issuer in issuers:
        cells = "".join(f"{k.flow_points.get((issuer, s), 0):>{width + 1},}" for s in shops)
        out(f"    {issuer.split('-')[0]:<10}{cells}")
    out(f"  settlement     {settled}")
    out(
        f"  journal        {summary.tree_size:,} entries → {export_path} "
        f"({summary.bytes_written:,} bytes)"
    )
    out(
        f"  verified       in the database in {online_seconds:.2f} s; offline in "
        f"{offline_seconds:.2f} s against {checkpoint_path}"
    )
    out(f"  root           {offline.root_hash.hex()} (tree size {cp.tree_size})")
    out(f"  verifier key   {format_vkey(signer.verifier())}")
    assert online.root_hash == offline.root_hash
    return 0

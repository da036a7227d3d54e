"""Settlement against PostgreSQL: a run at a signed cut, approval by a second person,
payments, statements, the pain.001 file (against the official XSD), recomputation from
an export to the same bytes, and reconciliation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sepaxml
import xmlschema

from coalition import settle
from coalition.context import Coalition
from coalition.earn import earn_points
from coalition.earning import EarningRules
from coalition.members import enroll_member
from coalition.outcomes import Refusal, RefusalCode
from coalition.partners import onboard_partner, publish_earning_rules, publish_terms
from coalition.redeem import redeem_points
from ledger import checkpoint_log, reads
from ledger.export import export_journal
from ledger.signed_note import Signer
from ledger.timefmt import parse_time_us
from settlement.terms import PartnerTerms
from tests.integration._world import SteppingClock, balance, ok, pay_all
from tests.tools.independent_settlement import recompute

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000_000_000  # 2027-01-15T08:00:00Z: the fixture's entries are January's
FEB_MOSCOW_US = parse_time_us("2027-01-31T21:00:00.000000Z")  # 2027-02-01 00:00 Moscow
XSD = Path(sepaxml.__file__).parent / "schemas" / "pain.001.001.09.xsd"
BANKS = {"grocer": "DE89370400440532013000", "airline": "DE02120300000000202051"}


@pytest.fixture()
def signer() -> Signer:
    return Signer.from_seed("ledger.test.example", bytes(range(32)))


@pytest.fixture()
def co() -> Coalition:
    return Coalition(clock_us=SteppingClock(T0))


@pytest.fixture()
def conn(db_url: str, co: Coalition) -> Iterator[psycopg.Connection[Any]]:
    terms = PartnerTerms(Decimal(50), Decimal(95), 100, Decimal("0.5"), "monthly", "multilateral")
    rules = EarningRules("EUR", 1, 100)  # a point per euro
    with psycopg.connect(db_url, autocommit=True) as c:
        for partner in ("grocer", "airline"):
            ok(onboard_partner(co, c, partner, partner.title(), "EUR"))
            ok(publish_terms(co, c, partner, terms, 0, f"terms-{partner}"))
            ok(publish_earning_rules(co, c, partner, rules, 0, f"rules-{partner}"))
            ok(
                settle.set_bank_account(
                    co,
                    c,
                    partner,
                    iban=BANKS[partner],
                    bic="COBADEFFXXX",
                    name=partner.title(),
                    ref_key=f"bank-{partner}",
                )
            )
        ok(enroll_member(co, c, "M1"))
        ok(
            earn_points(
                co,
                c,
                partner_id="grocer",
                ref_key="g1",
                purchase_minor=50_000,
                currency="EUR",
                member_id="M1",
            )
        )  # 500 points issued by grocer
        ok(redeem_points(co, c, partner_id="airline", ref_key="a1", points=300, member_id="M1"))
        yield c


def january(co: Coalition, conn: Any, signer: Signer, **kwargs: Any) -> Any:
    """Compute 2027-01 once it has ended in the coalition's time zone."""
    co.clock_us.now_us = max(co.clock_us.now_us, FEB_MOSCOW_US)  # type: ignore[attr-defined]
    return settle.compute(co, conn, signer, period="2027-01", computed_by="alice", **kwargs)


def test_a_run_prices_lines_nets_to_zero_and_is_stable(co, conn, signer):
    run = ok(january(co, conn, signer))
    body = json.loads(run.run_bytes)
    lines = {(x["payer"], x["payee"], x["reason"]): x["amount_minor"] for x in body["lines"]}
    # 300 points of grocer's redeemed at airline at 0.95 EUR: grocer owes airline 285.00;
    # issuance 500 × 0.50 = 250.00 to the operator; fee 1% of 300 × 0.95 = 2.85 from airline.
    assert lines == {
        ("grocer", "airline", "redemption"): 28_500,
        ("grocer", "coalition", "issuance"): 25_000,
        ("airline", "coalition", "operator_fee"): 285,
    }
    assert sum(p["net_minor"] for p in body["positions"]) == 0
    cut = checkpoint_log.latest(conn)
    assert cut is not None and body["cut"]["checkpoint"]["tree_size"] == cut.tree_size
    assert body["cut"]["end_seq"] == cut.tree_size  # every entry is January's
    again = ok(january(co, conn, signer))
    assert again.run_bytes == run.run_bytes  # unapproved: recomputed, same bytes


def test_approval_needs_a_second_person_and_a_period_settles_once(co, conn, signer):
    run = ok(january(co, conn, signer))
    refused = settle.approve(co, conn, run.run_id, "alice")
    assert isinstance(refused, Refusal) and refused.code is RefusalCode.SAME_APPROVER
    ok(settle.approve(co, conn, run.run_id, "bob"))
    twice = january(co, conn, signer)
    assert isinstance(twice, Refusal) and twice.code is RefusalCode.PERIOD_SETTLED
    balance = conn.execute(
        "SELECT balance FROM ledger_balance WHERE account = 'partner:airline:settlement:EUR'"
    ).fetchone()
    assert balance == (28_500 - 285,)
    for payment in json.loads(run.run_bytes)["payments"]:
        ok(settle.confirm_payment(co, conn, run.run_id, payment["end_to_end_id"], "bob"))
    assert settle.get_run(conn, run.run_id).status == "paid"
    balance = conn.execute(
        "SELECT balance FROM ledger_balance WHERE account = 'partner:airline:settlement:EUR'"
    ).fetchone()
    assert balance == (0,)  # paid out in full


def test_a_payment_confirmed_twice_says_by_whom_and_writes_nothing(co, conn, signer):
    run = ok(january(co, conn, signer))
    ok(settle.approve(co, conn, run.run_id, "bob"))
    payments = [p["end_to_end_id"] for p in json.loads(run.run_bytes)["payments"]]
    first = ok(settle.confirm_payment(co, conn, run.run_id, payments[0], "bob"))
    size = reads.head(conn).tree_size
    other = settle.confirm_payment(co, conn, run.run_id, payments[0], "carol")
    assert isinstance(other, Refusal) and other.code is RefusalCode.PAYMENT_ALREADY_CONFIRMED
    assert "bob" in other.detail and str(first.seq) in other.detail, other.detail
    retry = ok(settle.confirm_payment(co, conn, run.run_id, payments[0], "bob"))
    assert (retry.seq, retry.replayed) == (first.seq, True)
    for e2e in payments[1:]:
        ok(settle.confirm_payment(co, conn, run.run_id, e2e, "bob"))
    assert settle.get_run(conn, run.run_id).status == "paid"
    size = reads.head(conn).tree_size
    # Once the run is paid, a retry still gets its original answer, and a stranger's
    # confirmation is still told who made it (not "the run is paid").
    late = ok(settle.confirm_payment(co, conn, run.run_id, payments[0], "bob"))
    assert (late.seq, late.replayed) == (first.seq, True)
    late_other = settle.confirm_payment(co, conn, run.run_id, payments[-1], "carol")
    assert isinstance(late_other, Refusal)
    assert late_other.code is RefusalCode.PAYMENT_ALREADY_CONFIRMED
    assert reads.head(conn).tree_size == size


def test_a_period_not_yet_over_is_refused(co, conn, signer):
    early = settle.compute(co, conn, signer, period="2027-01", computed_by="alice")
    assert isinstance(early, Refusal) and early.code is RefusalCode.INVALID_REQUEST
    assert "not ended" in early.detail
    co.clock_us.now_us = FEB_MOSCOW_US - 10_000_000  # 23:59:50 on 31 January in Moscow
    early = settle.compute(co, conn, signer, period="2027-01", computed_by="alice")
    assert isinstance(early, Refusal) and early.code is RefusalCode.INVALID_REQUEST
    assert "not ended" in early.detail
    bad = settle.compute(co, conn, signer, period="January", computed_by="alice")
    assert isinstance(bad, Refusal) and bad.code is RefusalCode.INVALID_REQUEST


def test_a_late_entry_falls_into_the_next_period(co, conn, signer):
    first = ok(january(co, conn, signer))
    ok(settle.approve(co, conn, first.run_id, "bob"))
    ok(redeem_points(co, conn, partner_id="airline", ref_key="a-late", points=100, member_id="M1"))
    co.clock_us.now_us = parse_time_us("2027-02-28T21:00:00.000000Z")  # March in Moscow
    second = ok(settle.compute(co, conn, signer, period="2027-02", computed_by="alice"))
    assert second.start_seq == first.end_seq
    lines = json.loads(second.run_bytes)["lines"]
    redemption = [x for x in lines if x["reason"] == "redemption"]
    assert [(x["points"], x["amount_minor"]) for x in redemption] == [(100, 9_500)]


def test_payment_file_validates_against_the_official_xsd(co, conn, signer):
    run = ok(january(co, conn, signer))
    clearing = settle.clearing_account(demo=True)
    not_yet = settle.payment_file(conn, run.run_id, clearing, T0, "2027-02-01")
    assert isinstance(not_yet, Refusal) and not_yet.code is RefusalCode.RUN_NOT_APPROVED
    ok(settle.approve(co, conn, run.run_id, "bob"))
    xml = settle.payment_file(conn, run.run_id, clearing, T0, "2027-02-01")
    assert isinstance(xml, bytes)
    xmlschema.XMLSchema(str(XSD)).validate(xml.decode())
    assert b"<NbOfTxs>1</NbOfTxs>" in xml and b"<CtrlSum>282.15</CtrlSum>" in xml
    assert xml.count(b"<EndToEndId>") == 1 and BANKS["airline"].encode() in xml


def test_statements_in_three_formats(co, conn, signer):
    run = ok(january(co, conn, signer))
    as_json = json.loads(settle.statement(conn, run.run_id, "airline", "json"))
    assert as_json["net"] == [{"currency": "EUR", "direction": "to receive", "net_minor": 28_215}]
    as_csv = settle.statement(conn, run.run_id, "airline", "csv").decode()
    assert "gross,grocer,redemption,receivable,300,95,EUR,28500," in as_csv  # minor units
    pdf = settle.statement(conn, run.run_id, "airline", "pdf")
    assert pdf.startswith(b"%PDF")


def test_a_run_recomputed_from_an_export_gives_the_same_bytes(co, conn, signer, tmp_path):
    run = ok(january(co, conn, signer))
    export = tmp_path / "journal.jsonl"
    export_journal(conn, export)
    out = tmp_path / "run.json"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "coalition.cli",
            "settle",
            "from-export",
            "--export",
            str(export),
            "--run",
            run.run_id,
            "--period",
            "2027-01",
            "--start-seq",
            str(run.start_seq),
            "--end-seq",
            str(run.end_seq),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == run.run_bytes


def test_a_period_means_its_label_in_the_coalitions_time_zone(co, conn, signer):
    """Entries after the period's end but before the cut roll into the next period, and
    the statement says so (2027-02-01 begins at 21:00 UTC on 31 January in Moscow)."""
    co.clock_us.now_us = FEB_MOSCOW_US - 5_000_000
    ok(redeem_points(co, conn, partner_id="airline", ref_key="a-in", points=50, member_id="M1"))
    co.clock_us.now_us = FEB_MOSCOW_US
    late = ok(
        redeem_points(co, conn, partner_id="airline", ref_key="a-out", points=70, member_id="M1")
    )
    run = ok(january(co, conn, signer))
    body = json.loads(run.run_bytes)
    assert run.end_seq == late.seq < body["cut"]["checkpoint"]["tree_size"]
    [redemption] = [x for x in body["lines"] if x["reason"] == "redemption"]
    assert redemption["points"] == 300 + 50  # not the 70 of 1 February
    assert body["period_bounds"]["end"] == "2027-01-31T21:00:00.000000Z"
    notes = json.loads(settle.statement(conn, run.run_id, "airline", "json"))["notes"]
    assert any("belong to the next period" in note for note in notes), notes
    ok(settle.approve(co, conn, run.run_id, "bob"))
    co.clock_us.now_us = parse_time_us("2027-02-28T21:00:00.000000Z")
    february = ok(settle.compute(co, conn, signer, period="2027-02", computed_by="alice"))
    [later] = [x for x in json.loads(february.run_bytes)["lines"] if x["reason"] == "redemption"]
    assert february.start_seq == run.end_seq and later["points"] == 70


@pytest.mark.parametrize("paid_first", [True, False], ids=["paid", "approved-not-paid"])
def test_a_correction_posts_and_pays_only_the_difference(co, conn, signer, tmp_path, paid_first):
    airline = "partner:airline:settlement:EUR"
    first = ok(january(co, conn, signer))
    ok(settle.approve(co, conn, first.run_id, "bob"))
    if paid_first:
        pay_all(co, conn, first.run_id, "bob")
    # Back-dated terms (effective from the epoch): airline now gets 1.00 a point.
    dearer = PartnerTerms(Decimal(50), Decimal(100), 100, Decimal("0.5"), "monthly", "multilateral")
    ok(publish_terms(co, conn, "airline", dearer, 0, "terms-airline-2"))
    second = ok(january(co, conn, signer, correction=True))
    body = json.loads(second.run_bytes)
    assert second.run_id == "2027-01-r2" and body["supersedes"]["run"] == "2027-01"
    lines = {(x["payer"], x["payee"], x["reason"]): x["amount_minor"] for x in body["lines"]}
    assert lines[("grocer", "airline", "redemption")] == 30_000  # 300 × 1.00, in full
    # airline: receives 30,000 − fee 300 = 29,700 in all; 28,215 settled before: +1,485.
    changes = {(x["party"], x["currency"]): x["net_minor"] for x in body["position_changes"]}
    assert changes == {
        ("airline", "EUR"): 1_485,
        ("grocer", "EUR"): -1_500,
        ("coalition", "EUR"): 15,
    }
    assert [(p["payer"], p["payee"], p["amount_minor"]) for p in body["payments"]] == [
        ("coalition", "airline", 1_485),
        ("grocer", "coalition", 1_500),
    ]
    ok(settle.approve(co, conn, second.run_id, "bob"))
    approval = conn.execute(
        "SELECT canonical FROM ledger_entry WHERE kind = 'settlement_approved' ORDER BY seq DESC"
    ).fetchone()
    entry = json.loads(bytes(approval[0]))
    assert entry["corrects"] == settle.get_run(conn, first.run_id).approved_seq
    assert entry["meta"]["supersedes"] == "2027-01" and entry["meta"]["cut"]["tree_size"] > 0
    expected_due = 29_700 if not paid_first else 1_485
    assert balance(conn, airline) == expected_due
    # A correction of the correction: the old rate again (v3, back-dated too).
    ok(
        publish_terms(
            co,
            conn,
            "airline",
            PartnerTerms(Decimal(50), Decimal(95), 100, Decimal("0.5"), "monthly", "multilateral"),
            0,
            "terms-airline-3",
        )
    )
    third = ok(january(co, conn, signer, correction=True))
    body3 = json.loads(third.run_bytes)
    assert body3["supersedes"]["run"] == "2027-01-r2"
    assert {(x["party"], x["net_minor"]) for x in body3["position_changes"]} == {
        ("airline", -1_485),
        ("grocer", 1_500),
        ("coalition", -15),
    }
    ok(settle.approve(co, conn, third.run_id, "carol"))
    for run_id in (first.run_id, second.run_id, third.run_id):
        if not (paid_first and run_id == first.run_id):
            pay_all(co, conn, run_id, "bob")
    # Over all revisions, every party has been owed and paid what the latest says.
    for account in (airline, "partner:grocer:settlement:EUR", "coalition:revenue:EUR"):
        assert balance(conn, account) == 0, account
    statuses = [settle.get_run(conn, r).status for r in (first.run_id, second.run_id, third.run_id)]
    assert statuses == ["superseded", "superseded", "paid"]
    # Each revision recomputes from the export with its id alone.
    export = tmp_path / "journal.jsonl"
    export_journal(conn, export)
    for run_id in (first.run_id, second.run_id, third.run_id):
        run = settle.run_from_export(str(export), run_id)
        assert run.to_bytes() == settle.get_run(conn, run_id).run_bytes
        # … and through docs/SETTLEMENT.md alone (tests/tools/independent_settlement.py).
        assert recompute(str(export), run_id) == run.to_bytes()


def test_reconciliation_finds_matches_gaps_and_differences(co, conn):
    records = [
        {
            "ref": "g1",
            "kind": "earn",
            "member": "M1",
            "points": 500,
            "amount_minor": 50_000,
            "time": "2027-01-15T08:00:05.000000Z",
        },
        {
            "ref": "g-unknown",
            "kind": "earn",
            "member": "M1",
            "points": 3,
            "amount_minor": 300,
            "time": "2027-01-15T08:00:06.000000Z",
        },
    ]
    reconciliation_id, result = settle.submit_reconciliation(
        conn, "grocer", json.dumps(records).encode(), "json", 0, 2**62, 3_600_000_000
    )
    assert result["matched"] == ["g1"] and result["missing_ours"] == ["g-unknown"]
    wrong = [{**records[0], "points": 499}]
    _, result = settle.submit_reconciliation(
        conn, "grocer", json.dumps(wrong).encode(), "json", 0, 2**62, 3_600_000_000
    )
    assert result["mismatched"] == [{"ref": "g1", "field": "points", "ours": 500, "theirs": 499}]
    stored = conn.execute("SELECT count(*) FROM coalition_reconciliation").fetchone()
    assert stored == (2,) and reconciliation_id > 0

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
from ledger import checkpoint_log
from ledger.export import export_journal
from ledger.signed_note import Signer
from settlement.terms import PartnerTerms

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000_000_000
XSD = Path(sepaxml.__file__).parent / "schemas" / "pain.001.001.09.xsd"
BANKS = {"grocer": "DE89370400440532013000", "airline": "DE02120300000000202051"}


class Clock:
    def __init__(self) -> None:
        self.now_us = T0

    def __call__(self) -> int:
        self.now_us += 1_000_000
        return self.now_us


@pytest.fixture()
def signer() -> Signer:
    return Signer.from_seed("ledger.test.example", bytes(range(32)))


@pytest.fixture()
def co() -> Coalition:
    return Coalition(clock_us=Clock())


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


def ok(outcome: Any) -> Any:
    assert not isinstance(outcome, Refusal), outcome
    return outcome


def test_a_run_prices_lines_nets_to_zero_and_is_stable(co, conn, signer):
    run = ok(settle.compute(co, conn, signer, period="2026-11", computed_by="alice"))
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
    assert cut is not None and body["cut"]["end_seq"] == cut.tree_size  # cut at a signature
    again = ok(settle.compute(co, conn, signer, period="2026-11", computed_by="alice"))
    assert again.run_bytes == run.run_bytes  # unapproved: recomputed, same bytes


def test_approval_needs_a_second_person_and_a_period_settles_once(co, conn, signer):
    run = ok(settle.compute(co, conn, signer, period="2026-11", computed_by="alice"))
    refused = settle.approve(co, conn, run.run_id, "alice")
    assert isinstance(refused, Refusal) and refused.code is RefusalCode.SAME_APPROVER
    ok(settle.approve(co, conn, run.run_id, "bob"))
    twice = settle.compute(co, conn, signer, period="2026-11", computed_by="alice")
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


def test_a_period_not_yet_over_is_refused(co, conn, signer):
    early = settle.compute(co, conn, signer, period="2027-01", computed_by="alice")
    assert isinstance(early, Refusal) and early.code is RefusalCode.INVALID_REQUEST
    assert "not ended" in early.detail
    bad = settle.compute(co, conn, signer, period="January", computed_by="alice")
    assert isinstance(bad, Refusal) and bad.code is RefusalCode.INVALID_REQUEST


def test_a_late_entry_falls_into_the_next_period(co, conn, signer):
    first = ok(settle.compute(co, conn, signer, period="2026-11", computed_by="alice"))
    ok(settle.approve(co, conn, first.run_id, "bob"))
    ok(redeem_points(co, conn, partner_id="airline", ref_key="a-late", points=100, member_id="M1"))
    second = ok(settle.compute(co, conn, signer, period="2026-12", computed_by="alice"))
    assert second.start_seq == first.end_seq
    lines = json.loads(second.run_bytes)["lines"]
    redemption = [x for x in lines if x["reason"] == "redemption"]
    assert [(x["points"], x["amount_minor"]) for x in redemption] == [(100, 9_500)]


def test_payment_file_validates_against_the_official_xsd(co, conn, signer):
    run = ok(settle.compute(co, conn, signer, period="2026-11", computed_by="alice"))
    not_yet = settle.payment_file(conn, run.run_id, settle.clearing_account(), T0, "2027-02-01")
    assert isinstance(not_yet, Refusal) and not_yet.code is RefusalCode.RUN_NOT_APPROVED
    ok(settle.approve(co, conn, run.run_id, "bob"))
    xml = settle.payment_file(conn, run.run_id, settle.clearing_account(), T0, "2027-02-01")
    assert isinstance(xml, bytes)
    xmlschema.XMLSchema(str(XSD)).validate(xml.decode())
    assert b"<NbOfTxs>1</NbOfTxs>" in xml and b"<CtrlSum>282.15</CtrlSum>" in xml
    assert xml.count(b"<EndToEndId>") == 1 and BANKS["airline"].encode() in xml


def test_statements_in_three_formats(co, conn, signer):
    run = ok(settle.compute(co, conn, signer, period="2026-11", computed_by="alice"))
    as_json = json.loads(settle.statement(conn, run.run_id, "airline", "json"))
    assert as_json["net"] == [{"currency": "EUR", "direction": "to receive", "net_minor": 28_215}]
    as_csv = settle.statement(conn, run.run_id, "airline", "csv").decode()
    assert "grocer,redemption,receivable,300,95,EUR,285.00" in as_csv
    pdf = settle.statement(conn, run.run_id, "airline", "pdf")
    assert pdf.startswith(b"%PDF")


def test_a_run_recomputed_from_an_export_gives_the_same_bytes(co, conn, signer, tmp_path):
    run = ok(settle.compute(co, conn, signer, period="2026-11", computed_by="alice"))
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
            "2026-11",
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

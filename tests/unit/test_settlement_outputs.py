"""What settlement hands out: statements (JSON, CSV, PDF) and the pain.001 payment file,
checked on the January story of test_settlement_run.py (its numbers are worked out
there) — the same run gives the same bytes, and the payment file is valid against the
official ISO 20022 schema."""

from __future__ import annotations

import csv
import importlib.resources
import io
import json
import xml.etree.ElementTree as ET
from decimal import Decimal
from functools import cache
from typing import Any

import pytest
import xmlschema

from settlement.journal_view import OPERATOR
from settlement.pain001 import NAMESPACE, Clearing, MissingBankAccount, NothingToPay, pain001
from settlement.pdf import statement_pdf
from settlement.run import Run, compute_run
from settlement.statement import statement_bytes_csv, statement_bytes_json, statement_json
from tests.unit._memory_journal import (
    ALPHA_TERMS,
    BANKS,
    DEC_1_US,
    JAN_1_US,
    RUN_ID,
    CoalitionWriter,
    MemoryJournal,
    Story,
    day_us,
    january_story,
)
from tests.unit._pdf import pdf_text

CLEARING = Clearing("Coalition Clearing", "DE44500105175407324931", "INGDDEFFXXX")
CHECKPOINT = {"tree_size": 39, "root_hex": "ab" * 32}
NS = {"p": NAMESPACE}


@cache
def pain001_schema() -> xmlschema.XMLSchema:
    path = importlib.resources.files("sepaxml") / "schemas" / "pain.001.001.09.xsd"
    return xmlschema.XMLSchema(str(path))


def settle(story: Story, mode: str | None = None) -> Run:
    return compute_run(
        iter(story.journal.entries),
        run_id=RUN_ID,
        period="2027-01",
        start_seq=story.start_seq,
        end_seq=story.end_seq,
        checkpoint=CHECKPOINT,
        mode=mode,
    )


@pytest.fixture(scope="module")
def story() -> Story:
    return january_story()


@pytest.fixture(scope="module")
def run(story: Story) -> Run:
    return settle(story)


# --- statements ---------------------------------------------------------------------


def test_alpha_statement_lists_its_lines_totals_conversion_net_and_payment(run: Run) -> None:
    statement = statement_json(run, "alpha")
    assert statement["statement"] == "2027-01/alpha/r1"
    assert statement["replaces"] is None
    assert statement["settlement_currency"] == "EUR"
    assert [(x["line"], x["counterparty"], x["direction"]) for x in statement["lines"]] == [
        (0, OPERATOR, "receivable"),  # breakage
        (1, OPERATOR, "payable"),  # issuance
        (4, OPERATOR, "payable"),  # fee
        (7, "beta", "payable"),
        (8, "beta", "receivable"),
        (10, "gamma", "receivable"),
        (11, "gamma", "payable"),  # in GBP
    ]
    # EUR: receivable 2 + 248 + 337 = 587, payable 65 + 9 + 278 = 352; GBP: payable 167.
    assert statement["totals"] == [
        {"currency": "EUR", "receivable": 587, "payable": 352},
        {"currency": "GBP", "receivable": 0, "payable": 167},
    ]
    assert statement["conversions"] == [
        {
            "line": 11,
            "party": "alpha",
            "from": "GBP",
            "to": "EUR",
            "rate": "1.17",
            "from_minor": 167,
            "to_minor": 195,
        }
    ]
    # 587 − 352 − 195 = 40 to receive.
    assert statement["net"] == [{"currency": "EUR", "net_minor": 40, "direction": "to receive"}]
    assert [p["end_to_end_id"] for p in statement["payments"]] == ["2027-01-00002"]


def test_every_statement_ties_out_to_its_net_position(run: Run) -> None:
    for party in ("alpha", "beta", "gamma"):
        statement = statement_json(run, party)
        due: dict[str, int] = {}
        for total in statement["totals"]:
            due[total["currency"]] = total["receivable"] - total["payable"]
        for c in statement["conversions"]:
            # a converted line leaves the line's currency and lands in the party's own
            sign = -1 if _payable(statement, c["line"]) else 1
            due[c["from"]] -= sign * c["from_minor"]
            due[c["to"]] = due.get(c["to"], 0) + sign * c["to_minor"]
        net = {n["currency"]: n["net_minor"] for n in statement["net"]}
        assert {c: v for c, v in due.items() if v} == net, party


def test_the_coalition_s_statement_shows_what_its_clearing_converts(run: Run) -> None:
    statement = statement_json(run, OPERATOR)
    # Its lines alone: EUR 65 + 64 + 9 + 8 − 2 − 37 = 107, GBP 21 + 3 = 24. Its position is
    # +179 EUR and −40 GBP, because the clearing also took gamma's 337 EUR debt to alpha
    # for 286 GBP, and alpha's 167 and beta's 183 GBP debts to gamma for 195 and 214 EUR:
    # 107 − 337 + 195 + 214 = 179 and 24 + 286 − 167 − 183 = −40. A reader of the
    # statement must be able to see those legs, or its net cannot be checked against it.
    totals = {t["currency"]: t["receivable"] - t["payable"] for t in statement["totals"]}
    assert totals == {"EUR": 107, "GBP": 24}
    assert statement["net"] == [
        {"currency": "EUR", "net_minor": 179, "direction": "to receive"},
        {"currency": "GBP", "net_minor": -40, "direction": "to pay"},
    ]
    assert len(statement["conversions"]) == len(run.conversions) == 3


def _payable(statement: dict[str, Any], line_index: int) -> bool:
    [line] = [x for x in statement["lines"] if x["line"] == line_index]
    return bool(line["direction"] == "payable")


def test_a_correction_is_a_new_revision_naming_what_it_replaces(run: Run) -> None:
    statement = statement_json(run, "beta", revision=2, previous_run_id="2027-01")
    assert statement["statement"] == "2027-01/beta/r2"
    assert statement["replaces"] == "2027-01/beta"
    assert statement["net"] == [{"currency": "EUR", "net_minor": -219, "direction": "to pay"}]


def test_statements_are_the_same_bytes_when_the_run_is_computed_again(story: Story) -> None:
    first, second = settle(story), settle(story)
    for party in ("alpha", "beta", "gamma", OPERATOR):
        a, b = statement_json(first, party), statement_json(second, party)
        assert statement_bytes_json(a) == statement_bytes_json(b)
        assert statement_bytes_csv(a) == statement_bytes_csv(b)
        assert json.loads(statement_bytes_json(a)) == a


def test_csv_statement_reads_back_in_minor_units(run: Run) -> None:
    data = statement_bytes_csv(statement_json(run, "gamma"))
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert rows[0][:6] == [
        "statement",
        "2027-01/gamma/r1",
        "period",
        "2027-01",
        "entries",
        "16 <= seq < 39",
    ]
    assert rows[2][:10] == [
        "record",
        "counterparty",
        "reason",
        "direction",
        "points",
        "price_per_point_minor",
        "currency",
        "amount_minor",
        "payer",
        "payee",
    ]
    body = [row[:10] for row in rows[3:] if row[0] in ("gross", "net_position")]
    assert body == [
        ["gross", OPERATOR, "issuance", "payable", "1050", "0.02", "GBP", "21", "gamma", OPERATOR],
        [
            "gross",
            OPERATOR,
            "operator_fee",
            "payable",
            "1050",
            "0.00333",
            "GBP",
            "3",
            "gamma",
            OPERATOR,
        ],
        ["gross", "alpha", "redemption", "payable", "750", "0.45", "EUR", "337", "gamma", "alpha"],
        [
            "gross",
            "alpha",
            "redemption",
            "receivable",
            "500",
            "0.333",
            "GBP",
            "167",
            "alpha",
            "gamma",
        ],
        [
            "gross",
            "beta",
            "redemption",
            "receivable",
            "550",
            "0.333",
            "GBP",
            "183",
            "beta",
            "gamma",
        ],
        ["net_position", "", "", "to receive", "", "", "GBP", "40", OPERATOR, "gamma"],
    ]
    assert data.endswith(b"\r\n")


# --- PDF ------------------------------------------------------------------------------


def test_statement_pdf_renders_the_same_bytes_twice(story: Story) -> None:
    first, second = settle(story), settle(story)
    a = statement_pdf(first, statement_json(first, "alpha"))
    b = statement_pdf(second, statement_json(second, "alpha"))
    assert a.startswith(b"%PDF-")
    assert a.rstrip().endswith(b"%%EOF")
    assert a == b


def test_statement_pdf_says_who_owes_what(run: Run) -> None:
    text = pdf_text(statement_pdf(run, statement_json(run, "alpha")))
    assert "Net position: coalition pays alpha 0.40 EUR" in text
    assert "2027-01-00002" in text and "Alpha Ltd (alpha)" not in text  # no facts: ids
    for counterparty in ("beta", "gamma", OPERATOR):
        assert counterparty in text
    assert "1.67 GBP" in text and "1.95 EUR" in text  # the conversion, both sides


@pytest.mark.parametrize("party", ["alpha", "beta", "gamma", OPERATOR])
def test_every_party_s_statement_renders(run: Run, party: str) -> None:
    assert statement_pdf(run, statement_json(run, party)).startswith(b"%PDF-")


# --- pain.001 -------------------------------------------------------------------------


def payment_file(run: Run) -> bytes:
    return pain001(run, CLEARING, JAN_1_US + 40 * 86_400_000_000, "2027-02-10")


def test_payment_file_is_valid_against_the_official_schema(run: Run) -> None:
    document = payment_file(run)
    pain001_schema().validate(document.decode("utf-8"))


def test_payment_file_counts_sums_and_identifies_every_payment(run: Run) -> None:
    root = ET.fromstring(payment_file(run))
    header = root.find("p:CstmrCdtTrfInitn/p:GrpHdr", NS)
    assert header is not None
    # The coalition pays alpha 0.40 EUR and gamma 0.40 GBP; beta pays in, not listed.
    assert (header.findtext("p:MsgId", namespaces=NS) or "").startswith(f"{RUN_ID}-")
    assert header.findtext("p:NbOfTxs", namespaces=NS) == "2"
    assert Decimal(header.findtext("p:CtrlSum", namespaces=NS) or "") == Decimal("0.80")
    blocks = root.findall("p:CstmrCdtTrfInitn/p:PmtInf", NS)
    seen: list[tuple[str, str, str, str]] = []
    for block in blocks:
        txs = block.findall("p:CdtTrfTxInf", NS)
        amounts = [Decimal(tx.findtext("p:Amt/p:InstdAmt", namespaces=NS) or "") for tx in txs]
        assert block.findtext("p:NbOfTxs", namespaces=NS) == str(len(txs))
        assert Decimal(block.findtext("p:CtrlSum", namespaces=NS) or "") == sum(amounts)
        for tx in txs:
            amount = tx.find("p:Amt/p:InstdAmt", NS)
            assert amount is not None
            seen.append(
                (
                    tx.findtext("p:PmtId/p:EndToEndId", namespaces=NS) or "",
                    tx.findtext("p:CdtrAcct/p:Id/p:IBAN", namespaces=NS) or "",
                    amount.get("Ccy") or "",
                    amount.text or "",
                )
            )
    assert seen == [
        ("2027-01-00002", BANKS["alpha"][0], "EUR", "0.40"),
        ("2027-01-00003", BANKS["gamma"][0], "GBP", "0.40"),
    ]
    assert len({end_to_end for end_to_end, *_ in seen}) == len(seen)


def test_payment_file_is_the_same_bytes_for_the_same_run_and_message_id(story: Story) -> None:
    def made(run: Run) -> bytes:
        return pain001(run, CLEARING, JAN_1_US, "2027-02-10", message_id="M-1")

    assert made(settle(story)) == made(settle(story))


def test_bilateral_payment_file_lists_only_what_the_coalition_pays(story: Story) -> None:
    document = payment_file(settle(story, mode="bilateral"))
    pain001_schema().validate(document.decode("utf-8"))
    root = ET.fromstring(document)
    ids = [e.text for e in root.iter(f"{{{NAMESPACE}}}EndToEndId")]
    assert ids == ["2027-01-00003", "2027-01-00004"]  # alpha 0.70 EUR, gamma 0.40 GBP


def _single_payee_run(bank: bool) -> Run:
    journal = MemoryJournal(DEC_1_US)
    w = CoalitionWriter(journal)
    w.onboard("alpha", "EUR")
    w.onboard("beta", "EUR")
    if bank:
        w.set_bank_account("beta", *BANKS["beta"])
    for partner in ("alpha", "beta"):
        w.publish_terms(partner, ALPHA_TERMS, DEC_1_US)
    w.enroll("m1")
    w.at(day_us(1)).earn("alpha", "m1", 1000)
    w.redeem("beta", "m1", 1000)  # alpha owes beta 450 cents, paid through the clearing
    return compute_run(journal.entries, run_id="x", period="x", start_seq=0, end_seq=journal.size)


def test_a_payee_without_a_bank_account_is_named() -> None:
    with pytest.raises(MissingBankAccount, match="beta"):
        payment_file(_single_payee_run(bank=False))
    pain001_schema().validate(payment_file(_single_payee_run(bank=True)).decode("utf-8"))


def test_a_run_where_the_coalition_pays_nobody_has_no_payment_file(story: Story) -> None:
    empty = compute_run(
        story.journal.entries,
        run_id="empty",
        period="empty",
        start_seq=story.start_seq,
        end_seq=story.start_seq,
    )
    assert empty.payments == ()
    with pytest.raises(NothingToPay):
        payment_file(empty)

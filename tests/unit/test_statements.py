"""Statements fit for an invoice (issue 11, item 7): gross flows both ways then the net,
one unit convention per format (minor units named in JSON and CSV, major units with the
currency in the PDF), who pays whom in words, legal names, bank accounts, a due date,
the same entry range in every format, and a PDF with numbered pages whose tables repeat
their header on every page — readable with 15 partners.

Two stories: the January story of test_settlement_run.py, and fifteen partners (RUB, EUR
and JPY) where airline and pharmacy redeem each other's points — 766 of airline's at
pharmacy, 590 of pharmacy's at airline — which the run nets into one line of 176.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
from decimal import Decimal
from functools import cache
from pathlib import Path

import pytest

from coalition import accounts
from coalition.banking import make_iban
from ledger.requests import EntryRequest
from settlement.journal_view import OPERATOR
from settlement.pdf import FONT_FILES, FONTS_DIR, statement_pdf
from settlement.periods import period_bounds
from settlement.run import PeriodBounds, Run, compute_run
from settlement.statement import (
    CSV_COLUMNS,
    StatementFacts,
    read_statement_facts,
    statement_bytes_csv,
    statement_bytes_json,
    statement_json,
)
from settlement.terms import PartnerTerms
from tests.unit._memory_journal import (
    BANKS,
    DEC_1_US,
    RUN_ID,
    CoalitionWriter,
    MemoryJournal,
    Story,
    day_us,
    january_story,
)
from tests.unit._pdf import pdf_pages, pdf_text

BOUNDS = PeriodBounds(*period_bounds("2027-01", "Europe/Moscow")[1:], "Europe/Moscow")
CLEARING = {"iban": "DE44500105175407324931", "bic": "INGDDEFFXXX", "name": "Coalition Clearing"}

# Fifteen partners; the long ids are the ones a matrix header used to cut to "partne…".
FIFTEEN = (
    ("airline", "RUB", "Aeroflot-Style Airways International PJSC"),
    ("pharmacy", "RUB", "Pharmacy Chain Health & Beauty LLC"),
    ("grocer", "RUB", "Grocer Markets Ltd"),
    ("fuel", "RUB", "Fuel Stations of the North JSC"),
    ("bank", "EUR", "Partner Bank of the Coalition AG"),
    ("partner-hotel-chain-international", "EUR", "Hotel Chain International Holdings BV"),
    ("partner-electronics-megastore", "RUB", "Electronics Megastore Retail Group LLC"),
    ("partner-car-rental-worldwide", "EUR", "Car Rental Worldwide Mobility GmbH"),
    ("partner-railway-operator", "RUB", "АО «Пассажирские железные дороги»"),
    ("partner-telecom-mobile", "RUB", "Telecom Mobile Networks PJSC"),
    ("partner-tokyo-department-store", "JPY", "Tokyo Department Store Kabushiki Kaisha"),
    ("partner-coffee-roasters", "RUB", "Coffee Roasters Cafe Network LLC"),
    ("partner-cinema-multiplex", "RUB", "Cinema Multiplex Entertainment LLC"),
    ("partner-bookstore", "EUR", "Βιβλιοπωλείο Ευρώπη ΑΕ"),
    ("partner-insurance-group", "RUB", "Insurance Group of the Coalition Ltd"),
)
RATES = {
    ("RUB", "EUR"): "0.0105",
    ("EUR", "RUB"): "95.2",
    ("RUB", "JPY"): "1.62",
    ("JPY", "RUB"): "0.617",
    ("EUR", "JPY"): "160.5",
    ("JPY", "EUR"): "0.00623",
}


def _terms(currency: str) -> PartnerTerms:
    # Minor units per point: 25 kopecks (0.25 RUB), 0.4 cent, or 3 yen a point redeemed.
    rates = {"RUB": ("10", "25"), "EUR": ("0.1", "0.4"), "JPY": ("1", "3")}[currency]
    return PartnerTerms(
        Decimal(rates[0]), Decimal(rates[1]), 150, Decimal("0.5"), "monthly", "multilateral"
    )


def _onboard(w: CoalitionWriter, partner: str, currency: str, legal_name: str) -> None:
    """As CoalitionWriter.onboard, with a legal name of our own (the writer's: "<Id> Ltd")."""
    w._currencies[partner] = currency
    meta = {"partner": partner, "legal_name": legal_name, "settlement_currency": currency}
    w.journal.append(
        EntryRequest(
            "partner_onboarded",
            "operator",
            f"partner:{partner}",
            meta=meta,
            open_accounts=accounts.partner_accounts(partner) + accounts.coalition_accounts(),
        )
    )


@cache
def fifteen_story() -> tuple[MemoryJournal, int]:
    journal = MemoryJournal(DEC_1_US)
    w = CoalitionWriter(journal)
    for number, (partner, currency, name) in enumerate(FIFTEEN):
        _onboard(w, partner, currency, name)
        w.set_bank_account(partner, make_iban("DE", f"{37040044:08d}{number:010d}"), BIC, name)
        w.publish_terms(partner, _terms(currency), DEC_1_US)
    for (base, quote), rate in RATES.items():
        w.record_fx_rate("2027-01", base, quote, rate)
    start = journal.size
    w.at(day_us(1))
    for partner, _currency, _name in FIFTEEN:
        w.enroll(f"m-{partner}")
        w.earn(partner, f"m-{partner}", 5000)
    # The pair the issue names: both ways, at the same rate and currency.
    w.at(day_us(3)).redeem("pharmacy", "m-airline", 766)
    w.at(day_us(4)).redeem("airline", "m-pharmacy", 590)
    # Everyone else spends some points at the next two partners.
    for index, (partner, _currency, _name) in enumerate(FIFTEEN):
        for step in (1, 2):
            shop = FIFTEEN[(index + step) % len(FIFTEEN)][0]
            if {partner, shop} <= {"airline", "pharmacy"}:
                continue
            w.at(day_us(5 + step)).redeem(shop, f"m-{partner}", 100 * step + index)
    return journal, start


BIC = "COBADEFFXXX"


@cache
def fifteen_run() -> Run:
    journal, start = fifteen_story()
    return compute_run(
        journal.entries,
        run_id="2027-01",
        period="2027-01",
        start_seq=start,
        end_seq=journal.size,
        checkpoint={"tree_size": journal.size, "root_hex": "cd" * 32},
        bounds=BOUNDS,
    )


@cache
def fifteen_facts() -> StatementFacts:
    journal, _ = fifteen_story()
    return read_statement_facts(journal.entries, fifteen_run(), clearing_account=CLEARING)


def january() -> tuple[Story, Run, StatementFacts]:
    story = january_story()
    run = compute_run(
        iter(story.journal.entries),
        run_id=RUN_ID,
        period="2027-01",
        start_seq=story.start_seq,
        end_seq=story.end_seq,
        checkpoint={"tree_size": story.end_seq, "root_hex": "ab" * 32},
    )
    facts = read_statement_facts(story.journal.entries, run, clearing_account=CLEARING)
    return story, run, facts


@pytest.fixture(scope="module")
def jan() -> tuple[Story, Run, StatementFacts]:
    return january()


# --- gross both ways, then the net ---------------------------------------------------


def test_the_airline_sees_both_directions_with_pharmacy_then_the_net() -> None:
    statement = statement_json(fifteen_run(), "airline", fifteen_facts())
    [run_line] = [
        x
        for x in statement["lines"]
        if x["counterparty"] == "pharmacy" and x["reason"] == "redemption"
    ]
    assert (run_line["points"], run_line["direction"]) == (176, "payable")  # netted in the run
    gross = [
        (g["direction"], g["payer"], g["payee"], g["points"], g["amount_minor"], g["line"])
        for g in statement["gross"]
        if g["counterparty"] == "pharmacy" and g["reason"] == "redemption"
    ]
    # 766 × 25 = 19,150 kopecks owed to pharmacy; 590 × 25 = 14,750 owed to airline.
    assert gross == [
        ("payable", "airline", "pharmacy", 766, 19_150, run_line["line"]),
        ("receivable", "pharmacy", "airline", 590, 14_750, run_line["line"]),
    ]
    [net] = [
        c
        for c in statement["counterparties"]
        if c["counterparty"] == "pharmacy" and c["currency"] == "RUB"
    ]
    assert net["payable_minor"] == 19_150  # the two redeem nothing else of each other's
    assert net["receivable_minor"] == 14_750
    assert (net["payer"], net["payee"], net["net_minor"]) == ("airline", "pharmacy", 4_400)
    assert net["net_minor"] == run_line["amount_minor"]
    assert net["legal_name"] == "Pharmacy Chain Health & Beauty LLC"


def test_gross_rows_net_to_the_run_s_lines_for_every_party() -> None:
    run, facts = fifteen_run(), fifteen_facts()
    for party in [p for p, _, _ in FIFTEEN] + [OPERATOR]:
        statement = statement_json(run, party, facts)
        netted: dict[int, int] = {}
        for g in statement["gross"]:
            if g["line"] is None:
                continue
            mine = 1 if g["payer"] == run.lines[g["line"]].payer else -1
            netted[g["line"]] = netted.get(g["line"], 0) + mine * g["amount_minor"]
        assert netted == {x["line"]: x["amount_minor"] for x in statement["lines"]}, party


def test_the_net_position_ties_out_from_gross_and_conversions(
    jan: tuple[Story, Run, StatementFacts],
) -> None:
    _story, run, facts = jan
    for party in ("alpha", "beta", "gamma", OPERATOR):
        statement = statement_json(run, party, facts)
        due: dict[str, int] = {}
        for g in statement["gross"]:
            sign = 1 if g["direction"] == "receivable" else -1
            due[g["currency"]] = due.get(g["currency"], 0) + sign * g["amount_minor"]
        for c in statement["conversions"]:
            receivable = run.lines[c["line"]].payee == c["party"]
            sign = (1 if receivable else -1) * (1 if party == c["party"] else -1)
            due[c["from"]] -= sign * c["from_minor"]
            due[c["to"]] = due.get(c["to"], 0) + sign * c["to_minor"]
        signed = {
            n["currency"]: n["amount_minor"] * (1 if n["payee"] == party else -1)
            for n in statement["net_position"]
        }
        assert {c: v for c, v in due.items() if v} == signed, party


# --- words, units, names, accounts, dates -----------------------------------------------


def test_net_positions_say_who_pays_whom_never_a_negative_to_pay(
    jan: tuple[Story, Run, StatementFacts],
) -> None:
    _story, run, facts = jan
    beta = statement_json(run, "beta", facts)
    assert beta["net"] == [{"currency": "EUR", "net_minor": -219, "direction": "to pay"}]
    assert beta["net_position"] == [
        {
            "currency": "EUR",
            "amount_minor": 219,
            "direction": "to pay",
            "payer": "beta",
            "payee": OPERATOR,
        }
    ]
    rows = _csv(statement_bytes_csv(beta))
    [net] = [r for r in rows if r["record"] == "net_position"]
    assert (net["payer"], net["payee"], net["amount_minor"], net["currency"]) == (
        "beta",
        OPERATOR,
        "219",
        "EUR",
    )
    for row in rows:
        assert not row["amount_minor"].startswith("-"), row


def test_csv_columns_name_their_unit_and_carry_minor_units(
    jan: tuple[Story, Run, StatementFacts],
) -> None:
    _story, run, facts = jan
    data = statement_bytes_csv(statement_json(run, "gamma", facts))
    raw = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert raw[2] == list(CSV_COLUMNS)
    assert "amount_minor" in CSV_COLUMNS and "price_per_point_minor" in CSV_COLUMNS
    assert "amount" not in CSV_COLUMNS and "rate_per_point" not in CSV_COLUMNS
    gross = [
        tuple(r[k] for k in ("counterparty", "reason", "direction", "points"))
        + tuple(r[k] for k in ("price_per_point_minor", "currency", "amount_minor"))
        for r in _csv(data)
        if r["record"] == "gross"
    ]
    # gamma settles in GBP; 333 thousandths of a penny a point, 1,050 points issued.
    assert gross == [
        (OPERATOR, "issuance", "payable", "1050", "0.02", "GBP", "21"),
        (OPERATOR, "operator_fee", "payable", "1050", "0.00333", "GBP", "3"),
        ("alpha", "redemption", "payable", "750", "0.45", "EUR", "337"),
        ("alpha", "redemption", "receivable", "500", "0.333", "GBP", "167"),
        ("beta", "redemption", "receivable", "550", "0.333", "GBP", "183"),
    ]
    assert data.endswith(b"\r\n")


def test_legal_names_bank_accounts_and_payees_accounts(
    jan: tuple[Story, Run, StatementFacts],
) -> None:
    _story, run, facts = jan
    alpha = statement_json(run, "alpha", facts)
    assert alpha["legal_name"] == "Alpha Ltd"  # partner_onboarded's legal_name
    iban, bic, name = BANKS["alpha"]
    assert alpha["bank_account"] == {"iban": iban, "bic": bic, "name": name}
    assert {g["counterparty"]: g["counterparty_legal_name"] for g in alpha["gross"]} == {
        OPERATOR: CLEARING["name"],
        "beta": "Beta Ltd",
        "gamma": "Gamma Ltd",
    }
    [payment] = alpha["payments"]  # the coalition pays alpha: alpha's account
    assert payment["payee_bank_account"] == alpha["bank_account"]
    beta = statement_json(run, "beta", facts)
    [payment] = beta["payments"]  # beta pays the coalition: the clearing account
    assert (payment["payer"], payment["payee"]) == ("beta", OPERATOR)
    assert payment["payee_bank_account"] == CLEARING
    rows = _csv(statement_bytes_csv(beta))
    [paid] = [r for r in rows if r["record"] == "payment"]
    assert (paid["iban"], paid["bic"], paid["account_name"]) == (
        CLEARING["iban"],
        CLEARING["bic"],
        CLEARING["name"],
    )
    header = list(csv.reader(io.StringIO(statement_bytes_csv(alpha).decode())))[1]
    assert header[:4] == ["party", "alpha", "legal_name", "Alpha Ltd"]
    assert header[6:] == ["iban", iban, "bic", bic, "account_name", name]


def test_due_date_is_the_period_s_last_day_plus_14_in_the_coalition_s_zone() -> None:
    statement = statement_json(fifteen_run(), "airline", fifteen_facts())
    assert statement["due"] == {
        "date": "2027-02-14",
        "rule": "the period's last day (2027-01-31) + 14 days",
    }
    assert {p["due_date"] for p in statement["payments"]} == {"2027-02-14"}
    rows = list(csv.reader(io.StringIO(statement_bytes_csv(statement).decode())))
    assert rows[0][6:8] == ["due_date", "2027-02-14"]


def test_a_free_label_or_a_correction_is_due_after_its_approval(
    jan: tuple[Story, Run, StatementFacts],
) -> None:
    _story, run, facts = jan  # a run without calendar bounds
    assert statement_json(run, "alpha", facts)["due"] == {
        "date": None,
        "rule": "14 days after this run's approval",
    }


def test_the_entry_range_is_said_the_same_way_in_every_format() -> None:
    run, facts = fifteen_run(), fifteen_facts()
    statement = statement_json(run, "airline", facts)
    said = f"{run.start_seq} <= seq < {run.end_seq}"
    assert statement["entries"] == said
    first_row = next(csv.reader(io.StringIO(statement_bytes_csv(statement).decode())))
    assert first_row[4:6] == [
        "entries",
        said,
    ]
    assert said in pdf_text(statement_pdf(run, statement))


def test_statements_are_the_same_bytes_for_the_same_run() -> None:
    a = statement_json(fifteen_run(), "pharmacy", fifteen_facts())
    journal, start = fifteen_story()
    again = compute_run(
        journal.entries,
        run_id="2027-01",
        period="2027-01",
        start_seq=start,
        end_seq=journal.size,
        checkpoint={"tree_size": journal.size, "root_hex": "cd" * 32},
        bounds=BOUNDS,
    )
    b = statement_json(
        again, "pharmacy", read_statement_facts(journal.entries, again, clearing_account=CLEARING)
    )
    assert statement_bytes_json(a) == statement_bytes_json(b)
    assert statement_bytes_csv(a) == statement_bytes_csv(b)
    assert statement_pdf(fifteen_run(), a) == statement_pdf(again, b)


# --- the PDF ---------------------------------------------------------------------------


def test_pdf_amounts_are_major_units_with_their_currency() -> None:
    run = fifteen_run()
    text = pdf_text(statement_pdf(run, statement_json(run, "airline", fifteen_facts())))
    assert "0.25 RUB" in text  # 25 kopecks a point
    assert "191.50 RUB" in text and "147.50 RUB" in text  # 766 and 590 points, both ways
    assert "airline pays pharmacy 44.00 RUB" in text
    tokyo = pdf_text(
        statement_pdf(run, statement_json(run, "partner-tokyo-department-store", fifteen_facts()))
    )
    assert "3 JPY" in tokyo  # no minor unit: no decimals
    amounts = re.sub(r"= [\d.]+ JPY", "", tokyo)  # rates (1 RUB = 1.62 JPY) may have decimals
    assert not re.search(r"[1-9][\d,]*\.\d+ JPY", amounts)  # a price per point may: 0.045
    assert re.search(r"\d{1,3}(,\d{3})+(\.\d\d)? RUB", pdf_text(_coalition_pdf()))


def _coalition_pdf() -> bytes:
    run = fifteen_run()
    return statement_pdf(run, statement_json(run, OPERATOR, fifteen_facts()))


def test_every_page_is_numbered_and_repeats_the_table_header() -> None:
    pages = pdf_pages(_coalition_pdf())
    assert len(pages) >= 2
    for number, page in enumerate(pages, start=1):
        assert re.search(rf"page {number} of\s*{len(pages)}\b", page), number
    # The gross table runs over pages (its rows alone say "operator fee"): its heading
    # row is at the top of each of them.
    on = [page for page in pages if "operator fee" in page]
    assert len(on) >= 2
    for page in on:
        assert "Price per point" in page and "Owed to party" in page
        assert page.index("Price per point") < page.index("operator fee")


def test_fifteen_partners_read_whole_names_never_cut() -> None:
    text = pdf_text(_coalition_pdf())
    assert "..." not in text and "\u2026" not in text
    for partner, _currency, name in FIFTEEN:
        # a wrapped cell may split a long name over lines: compare without whitespace
        assert re.sub(r"\s", "", f"{name}({partner})") in re.sub(r"\s", "", text), partner


def test_legal_names_print_as_written_in_cyrillic_and_greek() -> None:
    run, facts = fifteen_run(), fifteen_facts()
    text = pdf_text(statement_pdf(run, statement_json(run, "partner-railway-operator", facts)))
    assert "АО «Пассажирские железные дороги»" in text
    text = pdf_text(statement_pdf(run, statement_json(run, "partner-bookstore", facts)))
    assert "Βιβλιοπωλείο Ευρώπη ΑΕ" in text
    assert "?" not in text  # no character of the statement fell back to "?"


def test_a_character_the_font_lacks_prints_as_a_question_mark() -> None:
    from settlement.pdf import _t

    assert _t("東京 Store — Ромашка") == "?? Store — Ромашка"


def test_the_embedded_fonts_are_the_recorded_files() -> None:
    import hashlib

    recorded = (FONTS_DIR / "README.md").read_text()
    for name in FONT_FILES.values():
        digest = hashlib.sha256((FONTS_DIR / name).read_bytes()).hexdigest()
        assert f"| {name} | {digest} |" in recorded, name
    assert "Bitstream" in (FONTS_DIR / "LICENSE").read_text()


def test_the_run_s_own_read_gives_the_statement_facts_a_second_read_gives() -> None:
    from settlement.run import compute_run_read
    from settlement.statement import statement_facts_from

    for story in (fifteen_story(), (january_story().journal, january_story().start_seq)):
        journal, start = story
        run, facts, buckets = compute_run_read(
            journal.entries,
            run_id="2027-01",
            period="2027-01",
            start_seq=start,
            end_seq=journal.size,
            checkpoint={"tree_size": journal.size, "root_hex": "cd" * 32},
        )
        again = read_statement_facts(journal.entries, run, clearing_account=CLEARING)
        once = statement_facts_from(buckets, facts.legal_names, CLEARING)
        assert once == again and once.gross and once.legal_names


def test_every_party_s_statement_renders() -> None:
    run, facts = fifteen_run(), fifteen_facts()
    for party in [p for p, _, _ in FIFTEEN] + [OPERATOR]:
        assert statement_pdf(run, statement_json(run, party, facts)).startswith(b"%PDF-")


# --- helpers ----------------------------------------------------------------------------


def _csv(data: bytes) -> list[dict[str, str]]:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    header = rows[2]
    return [dict(zip(header, row, strict=True)) for row in rows[3:]]


def render_pngs(out_dir: Path) -> list[Path]:
    """For looking: the coalition's and airline's 15-partner statements as PNG pages."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run = fifteen_run()
    made: list[Path] = []
    for party in (OPERATOR, "airline", "partner-tokyo-department-store"):
        pdf = out_dir / f"{party}.pdf"
        pdf.write_bytes(statement_pdf(run, statement_json(run, party, fifteen_facts())))
        subprocess.run(["pdftoppm", "-png", "-r", "80", str(pdf), str(out_dir / party)], check=True)
        made += sorted(out_dir.glob(f"{party}-*.png"))
    return made

"""A partner's statement as a PDF a finance person can read: who owes whom and why, the
net due and its direction, the payments, the coalition's totals and a small flow table.

Deterministic (fixed creation date taken from the run, no random file id), so the same
statement gives the same bytes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fpdf import FPDF

from settlement.journal_view import OPERATOR
from settlement.money import decimal_text, format_minor, minor_exponent
from settlement.run import Run

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_WIDTHS = (10, 36, 22, 20, 18, 36, 44)  # line, counterparty, reason, direction, points, …


def statement_pdf(run: Run, statement: dict[str, Any]) -> bytes:
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_creation_date(_EPOCH)
    pdf.set_producer("coalition-ledger")
    pdf.set_title(f"Settlement statement {statement['statement']}")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 15)
    pdf.cell(0, 9, "Coalition settlement statement", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    cut = statement["cut"]
    checkpoint = cut.get("checkpoint") or {}
    facts = [
        ("Partner", f"{statement['party']} (settles in {statement['settlement_currency']})"),
        ("Period", statement["period"]),
        ("Statement", f"{statement['statement']}  (revision {statement['revision']})"),
        (
            "Journal entries",
            f"{cut['start_seq']:,} to {cut['end_seq'] - 1:,} (cut at tree size {cut['end_seq']:,})",
        ),
        (
            "Checkpoint root",
            f"{str(checkpoint.get('root_hex', '-'))[:40]}... (tree size {cut['end_seq']:,})",
        ),
        ("Settlement mode", statement["mode"]),
    ]
    if statement.get("replaces"):
        facts.append(("Replaces", statement["replaces"]))
    for label, value in facts:
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(38, 5.5, label)
        pdf.set_font("Helvetica", "", 9)
        pdf.cell(0, 5.5, str(value), new_x="LMARGIN", new_y="NEXT")
    _net_box(pdf, statement)
    _heading(pdf, "Lines")
    _row(
        pdf,
        ("Line", "Counterparty", "Reason", "Direction", "Points", "Price per point", "Amount"),
        bold=True,
    )
    for line in statement["lines"]:
        _row(
            pdf,
            (
                str(line["line"]),
                line["counterparty"],
                line["reason"].replace("_", " "),
                line["direction"],
                f"{line['points']:,}",
                _rate(line["rate_per_point"], line["currency"]),
                f"{_money(line['amount_minor'], line['currency'])}",
            ),
        )
    for total in statement["totals"]:
        _row(
            pdf,
            ("", "Total", "", "receivable", "", "", _money(total["receivable"], total["currency"])),
            bold=True,
        )
        _row(
            pdf,
            ("", "", "", "payable", "", "", _money(total["payable"], total["currency"])),
            bold=True,
        )
    if statement["conversions"]:
        _heading(pdf, "Currency conversions (rate recorded for the run)")
        for c in statement["conversions"]:
            pdf.cell(
                0,
                5.5,
                f"line {c['line']}: {_money(c['from_minor'], c['from'])} at "
                f"{c['rate']} = {_money(c['to_minor'], c['to'])}",
                new_x="LMARGIN",
                new_y="NEXT",
            )
    _heading(pdf, "Payments")
    if not statement["payments"]:
        pdf.cell(0, 5.5, "none", new_x="LMARGIN", new_y="NEXT")
    for p in statement["payments"]:
        pdf.cell(
            0,
            5.5,
            f"{p['end_to_end_id']}: {p['payer']} pays {p['payee']} "
            f"{_money(p['amount_minor'], p['currency'])}",
            new_x="LMARGIN",
            new_y="NEXT",
        )
    _coalition(pdf, run, statement["party"])
    data: bytes = bytes(pdf.output())
    return data


def _rate(rate_minor_per_point: str, currency: str) -> str:
    """A rate in minor units per point, shown in the currency's major unit."""
    major = Decimal(rate_minor_per_point).scaleb(-minor_exponent(currency))
    return f"{decimal_text(major)} {currency}"


def _money(minor: int, currency: str) -> str:
    whole, _, fraction = format_minor(minor, currency).partition(".")
    sign = "-" if whole.startswith("-") else ""
    grouped = f"{int(whole.lstrip('-')):,}"
    return f"{sign}{grouped}{'.' + fraction if fraction else ''} {currency}"


def _heading(pdf: FPDF, text: str) -> None:
    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(0, 7, text, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)


def _row(pdf: FPDF, cells: tuple[str, ...], bold: bool = False) -> None:
    pdf.set_font("Helvetica", "B" if bold else "", 9)
    for index, (width, text) in enumerate(zip(_WIDTHS, cells, strict=True)):
        align = "R" if index >= 4 else "L"
        pdf.cell(width, 5.5, _fit(pdf, text, width), border="B" if bold else 0, align=align)
    pdf.ln(5.5)
    pdf.set_font("Helvetica", "", 9)


def _net_box(pdf: FPDF, statement: dict[str, Any]) -> None:
    pdf.ln(3)
    pdf.set_fill_color(235, 240, 248)
    pdf.set_font("Helvetica", "B", 12)
    if not statement["net"]:
        pdf.cell(
            0,
            10,
            "  Net position: nothing to pay or receive",
            fill=True,
            new_x="LMARGIN",
            new_y="NEXT",
        )
    for net in statement["net"]:
        amount = _money(abs(net["net_minor"]), net["currency"])
        pdf.cell(
            0, 10, f"  Net {net['direction']}: {amount}", fill=True, new_x="LMARGIN", new_y="NEXT"
        )
    pdf.set_font("Helvetica", "", 9)


def _coalition(pdf: FPDF, run: Run, party: str) -> None:
    _heading(pdf, "Coalition totals for the run")
    for currency, gross in run.gross_minor.items():
        net = run.net_minor.get(currency, 0)
        pdf.cell(
            0,
            5.5,
            f"{currency}: obligations {_money(gross, currency)}; money moved by "
            f"the run's payments {_money(net, currency)}",
            new_x="LMARGIN",
            new_y="NEXT",
        )
    flows: dict[tuple[str, str], int] = {}
    for line in run.lines:
        # A partner sees its own row and column only: other pairs' volumes are theirs.
        mine = party == OPERATOR or party in (line.payer, line.payee)
        if line.reason == "redemption" and mine:
            flows[(line.payer, line.payee)] = flows.get((line.payer, line.payee), 0) + line.points
    if not flows:
        return
    _heading(pdf, "Points redeemed across partners (issuer in rows, redeemed at in columns)")
    issuers = sorted({a for a, _ in flows})
    shops = sorted({b for _, b in flows})
    width = min(30.0, 150 / max(len(shops), 1))
    pdf.set_font("Helvetica", "B", 7)
    pdf.cell(32, 5, "")
    for shop in shops:
        pdf.cell(width, 5, _fit(pdf, shop, width), align="R")
    pdf.ln(5)
    for issuer in issuers:
        pdf.set_font("Helvetica", "B", 8)
        pdf.cell(32, 5, _fit(pdf, issuer, 32))
        pdf.set_font("Helvetica", "", 8)
        for shop in shops:
            points = flows.get((issuer, shop))
            pdf.cell(width, 5, f"{points:,}" if points else "-", align="R")
        pdf.ln(5)


def _fit(pdf: FPDF, text: str, width: float) -> str:
    """Shorten with an ellipsis so a long id never runs into the next column."""
    if pdf.get_string_width(text) <= width - 1:
        return text
    while text and pdf.get_string_width(text + "...") > width - 1:
        text = text[:-1]
    return text + "..."

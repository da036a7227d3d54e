"""A partner's statement as a PDF a finance person can file as an invoice: who the
parties are (legal names, bank accounts), what flowed each way by counterparty and
reason, the net per counterparty, the net position and who pays whom, the payments with
the payee's account and the due date, on numbered pages whose tables repeat their
header on every page (fpdf2's ``table()``), landscape so that 15+ counterparties read
whole (cells wrap; nothing is cut short).

Amounts are in major units with their currency ("1,234.56 EUR", "600 JPY", "0.25 RUB"),
by the currency's ISO 4217 exponent (settlement.money). Text is set in DejaVu Sans,
embedded from settlement/fonts (Cyrillic and Greek legal names print as written).
Deterministic: the creation date is fixed and nothing random goes in, so the same
statement gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from fontTools.ttLib import TTFont  # type: ignore[import-untyped]
from fpdf import FPDF
from fpdf.fonts import FontFace

from settlement.journal_view import OPERATOR
from settlement.money import decimal_text, format_minor, minor_exponent
from settlement.run import Run

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_FONT = "DejaVuSans"  # embedded from settlement/fonts: Latin, Greek and Cyrillic
FONTS_DIR = Path(__file__).parent / "fonts"
FONT_FILES = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf"}
_WIDTH = 273.0  # A4 landscape, 12 mm margins
_HEAD = FontFace(emphasis="BOLD", fill_color=(226, 232, 242))
_BOLD = FontFace(emphasis="BOLD")


class _Statement(FPDF):
    def __init__(self, title: str) -> None:
        super().__init__(orientation="L", unit="mm", format="A4")
        self.statement_title = title
        for style, name in FONT_FILES.items():
            self.add_font(_FONT, style, str(FONTS_DIR / name))

    def header(self) -> None:
        if self.page_no() == 1:
            return
        self.set_font(_FONT, "", 8)
        self.set_text_color(90, 90, 90)
        self.cell(0, 5, _t(f"Coalition settlement statement {self.statement_title}"))
        self.ln(7)
        self.set_text_color(0, 0, 0)

    def footer(self) -> None:
        self.set_y(-11)
        self.set_font(_FONT, "", 8)
        self.set_text_color(90, 90, 90)
        self.cell(0, 5, _t(f"Statement {self.statement_title}"), align="L")
        self.set_x(self.l_margin)
        self.cell(0, 5, f"page {self.page_no()} of {{nb}}", align="R")
        self.set_text_color(0, 0, 0)


def statement_pdf(run: Run, statement: dict[str, Any]) -> bytes:
    party = statement["party"]
    pdf = _Statement(statement["statement"])
    pdf.set_creation_date(_EPOCH)
    pdf.set_producer("coalition-ledger")
    pdf.set_title(f"Settlement statement {statement['statement']}")
    pdf.set_margins(12, 12, 12)
    pdf.set_auto_page_break(auto=True, margin=16)
    pdf.alias_nb_pages()
    pdf.add_page()
    pdf.set_font(_FONT, "B", 15)
    pdf.cell(0, 8, "Coalition settlement statement", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1)
    _facts(pdf, statement)
    _net_box(pdf, statement)

    names = {g["counterparty"]: g["counterparty_legal_name"] for g in statement["gross"]}
    names[party] = statement["legal_name"]
    _heading(
        pdf,
        f"What {party} owes and is owed, by counterparty and reason"
        " (gross, each way, before netting)",
    )
    _gross(pdf, statement, names)
    _heading(pdf, "Net per counterparty")
    if statement["mode"] == "multilateral":
        pdf.multi_cell(
            0,
            4.8,
            "Multilateral: what is owed to and by each counterparty; the money moves"
            " through the coalition's clearing (see the payments).",
            new_x="LMARGIN",
            new_y="NEXT",
        )
    _counterparties(pdf, statement)
    _heading(pdf, f"Net position of {party}")
    _positions(pdf, statement)
    if statement["conversions"]:
        _heading(pdf, "Currency conversions (at the rate recorded for the run)")
        _conversions(pdf, statement)
    _heading(pdf, "Payments")
    _payments(pdf, statement)
    if statement.get("notes"):
        _heading(pdf, "Notes")
        pdf.set_font(_FONT, "", 9)
        for note in statement["notes"]:
            pdf.multi_cell(0, 4.8, _t(note), new_x="LMARGIN", new_y="NEXT")
    _coalition(pdf, run)
    data: bytes = bytes(pdf.output())
    return data


# --- blocks -----------------------------------------------------------------------


def _facts(pdf: FPDF, statement: dict[str, Any]) -> None:
    cut = statement["cut"]
    checkpoint = cut.get("checkpoint") or {}
    tree_size = checkpoint.get("tree_size", cut["end_seq"])
    own = statement.get("bank_account")
    due = statement["due"]
    entries = cut["end_seq"] - cut["start_seq"]
    facts = [
        ("Party", f"{statement['legal_name']} ({statement['party']})"),
        ("Settles in", str(statement["settlement_currency"])),
        ("Bank account", _account(own)),
        ("Period", statement["period"]),
        ("Statement", f"{statement['statement']} (revision {statement['revision']})"),
        (
            "Journal entries",
            f"{statement['entries']} ({entries:,} entries; facts read up to the cut at"
            f" tree size {tree_size:,})",
        ),
        ("Checkpoint root", str(checkpoint.get("root_hex", "-"))),
        ("Settlement mode", statement["mode"]),
        ("Due date", due["date"] or due["rule"]),
    ]
    if due["date"]:
        facts[-1] = ("Due date", f"{due['date']} ({due['rule']})")
    if statement.get("replaces"):
        facts.append(("Replaces", statement["replaces"]))
    for label, value in facts:
        pdf.set_font(_FONT, "B", 9)
        pdf.cell(34, 5, label)
        pdf.set_font(_FONT, "", 9)
        pdf.multi_cell(0, 5, _t(value), new_x="LMARGIN", new_y="NEXT")


def _net_box(pdf: FPDF, statement: dict[str, Any]) -> None:
    pdf.ln(2)
    pdf.set_fill_color(235, 240, 248)
    pdf.set_font(_FONT, "B", 12)
    due = statement["due"]["date"]
    if not statement["net_position"]:
        pdf.cell(0, 9, "  Net position: nothing to pay or receive", fill=True)
        pdf.ln(9)
    for net in statement["net_position"]:
        text = f"  Net position: {_who_pays(net, net['currency'])}"
        if due and net["payer"] == statement["party"]:
            text += f", due {due}"
        pdf.multi_cell(0, 9, _t(text), fill=True, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(_FONT, "", 9)


def _gross(pdf: FPDF, statement: dict[str, Any], names: dict[str, str]) -> None:
    rows: list[Sequence[str]] = []
    for g in statement["gross"]:
        owed_by = g["direction"] == "payable"
        money = _money(g["amount_minor"], g["currency"])
        rows.append(
            (
                _named(names, g["counterparty"]),
                g["reason"].replace("_", " "),
                f"{g['points']:,}",
                _rate(g["rate_per_point"], g["currency"]),
                money if owed_by else "",
                "" if owed_by else money,
                "-" if g["line"] is None else str(g["line"]),
                f"{g['first_seq']}-{g['last_seq']} ({g['entries']})",
            )
        )
    if not rows:
        _none(pdf)
        return
    totals = _gross_totals(statement)
    for currency, (payable, receivable) in totals.items():
        rows.append(
            (
                f"Total {currency}",
                "",
                "",
                "",
                _money(payable, currency),
                _money(receivable, currency),
                "",
                "",
            )
        )
    _table(
        pdf,
        (
            "Counterparty",
            "Reason",
            "Points",
            "Price per point",
            "Owed by party",
            "Owed to party",
            "Run line",
            "Entries: seq first-last (count)",
        ),
        rows,
        widths=(70, 27, 22, 29, 36, 36, 16, 37),
        right=(2, 3, 4, 5, 6),
        bold_rows=len(totals),
    )


def _gross_totals(statement: dict[str, Any]) -> dict[str, tuple[int, int]]:
    totals: dict[str, tuple[int, int]] = {}
    for g in statement["gross"]:
        payable, receivable = totals.get(g["currency"], (0, 0))
        if g["direction"] == "payable":
            payable += g["amount_minor"]
        else:
            receivable += g["amount_minor"]
        totals[g["currency"]] = (payable, receivable)
    return dict(sorted(totals.items()))


def _counterparties(pdf: FPDF, statement: dict[str, Any]) -> None:
    rows = [
        (
            _named({c["counterparty"]: c["legal_name"]}, c["counterparty"]),
            _money(c["payable_minor"], c["currency"]),
            _money(c["receivable_minor"], c["currency"]),
            _who_pays(
                {"payer": c["payer"], "payee": c["payee"], "amount_minor": c["net_minor"]},
                c["currency"],
            ),
        )
        for c in statement["counterparties"]
    ]
    if not rows:
        _none(pdf)
        return
    _table(
        pdf,
        ("Counterparty", "Owed by party", "Owed to party", "Net: who pays whom"),
        rows,
        widths=(80, 38, 38, 117),
        right=(1, 2),
    )


def _positions(pdf: FPDF, statement: dict[str, Any]) -> None:
    party = statement["party"]
    totals = _gross_totals(statement)
    moved: dict[str, int] = {}
    for c in statement["conversions"]:
        if c["party"] != party and party != OPERATOR:
            continue
        # The converted party's side leaves the line's currency for its own; the
        # clearing takes the other side.
        sign = 1 if _converted_receivable(statement, c) else -1
        if c["party"] == party:
            moved[c["from"]] = moved.get(c["from"], 0) - sign * c["from_minor"]
            moved[c["to"]] = moved.get(c["to"], 0) + sign * c["to_minor"]
        else:  # the operator's clearing
            moved[c["from"]] = moved.get(c["from"], 0) + sign * c["from_minor"]
            moved[c["to"]] = moved.get(c["to"], 0) - sign * c["to_minor"]
    net = {n["currency"]: n for n in statement["net_position"]}
    rows = []
    for currency in sorted(set(totals) | set(moved) | set(net)):
        payable, receivable = totals.get(currency, (0, 0))
        found = net.get(currency)
        rows.append(
            (
                currency,
                _money(payable, currency),
                _money(receivable, currency),
                _signed(moved.get(currency, 0), currency),
                "settled" if found is None else _who_pays(found, currency),
            )
        )
    if not rows:
        _none(pdf)
        return
    _table(
        pdf,
        (
            "Currency",
            "Owed by party (gross)",
            "Owed to party (gross)",
            "Conversions (effect on the net)",
            "Net position: who pays whom",
        ),
        rows,
        widths=(20, 45, 45, 48, 115),
        right=(1, 2, 3),
    )


def _converted_receivable(statement: dict[str, Any], conversion: dict[str, Any]) -> bool:
    for line in statement["lines"]:
        if line["line"] == conversion["line"]:
            return bool(line["payee"] == conversion["party"])
    return False


def _conversions(pdf: FPDF, statement: dict[str, Any]) -> None:
    rows = [
        (
            str(c["line"]),
            c["party"],
            _money(c["from_minor"], c["from"]),
            f"1 {c['from']} = {c['rate']} {c['to']}",
            _money(c["to_minor"], c["to"]),
        )
        for c in statement["conversions"]
    ]
    _table(
        pdf,
        ("Run line", "Converted for", "Amount", "Rate", "Converted amount"),
        rows,
        widths=(20, 70, 45, 60, 45),
        right=(2, 4),
        width=240,
    )


def _payments(pdf: FPDF, statement: dict[str, Any]) -> None:
    rows = [
        (
            p["end_to_end_id"],
            p["payer"],
            _named({p["payee"]: p["payee_legal_name"]}, p["payee"]),
            _money(p["amount_minor"], p["currency"]),
            _account(p["payee_bank_account"]),
            p["due_date"] or statement["due"]["rule"],
        )
        for p in statement["payments"]
    ]
    if not rows:
        _none(pdf)
        return
    _table(
        pdf,
        ("Reference", "Payer", "Payee", "Amount", "Payee's bank account", "Due"),
        rows,
        widths=(28, 56, 56, 30, 75, 28),
        right=(3,),
    )


def _coalition(pdf: FPDF, run: Run) -> None:
    _heading(pdf, "Coalition totals for the run")
    rows = [
        (
            currency,
            _money(gross, currency),
            _money(run.net_minor.get(currency, 0), currency),
        )
        for currency, gross in run.gross_minor.items()
    ]
    if not rows:
        _none(pdf)
        return
    _table(
        pdf,
        ("Currency", "Obligations (all lines)", "Moved by this run's payments"),
        rows,
        widths=(30, 60, 60),
        right=(1, 2),
        width=150,
    )


# --- primitives -------------------------------------------------------------------


def _table(
    pdf: FPDF,
    headings: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    widths: Sequence[float],
    right: Sequence[int] = (),
    bold_rows: int = 0,
    width: float = _WIDTH,
) -> None:
    """A table whose heading row repeats at the top of every page it runs onto; cells
    wrap (never cut)."""
    pdf.set_font(_FONT, "", 8.5)
    align = tuple("RIGHT" if i in right else "LEFT" for i in range(len(headings)))
    with pdf.table(
        col_widths=tuple(widths),
        width=width,
        align="LEFT",
        text_align=align,
        headings_style=_HEAD,
        line_height=4.6,
        padding=(0.8, 1.2),
        borders_layout="HORIZONTAL_LINES",
        repeat_headings=1,
    ) as table:
        heading = table.row()
        for text in headings:
            heading.cell(_t(text))
        for index, cells in enumerate(rows):
            row = table.row()
            style = _BOLD if index >= len(rows) - bold_rows else None
            for text in cells:
                row.cell(_t(text), style=style)
    pdf.ln(1)


def _heading(pdf: FPDF, text: str) -> None:
    if pdf.will_page_break(32):  # a heading stays with the start of what it heads
        pdf.add_page()
    else:
        pdf.ln(3)
    pdf.set_font(_FONT, "B", 11)
    pdf.multi_cell(0, 6.5, _t(text), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(_FONT, "", 9)


def _none(pdf: FPDF) -> None:
    pdf.set_font(_FONT, "", 9)
    pdf.cell(0, 5, "none", new_x="LMARGIN", new_y="NEXT")


def _named(names: dict[str, str], party: str) -> str:
    name = names.get(party, party)
    return party if name == party else f"{name} ({party})"


def _account(account: dict[str, str] | None) -> str:
    if not account:
        return "none on record"
    return f"{account['name']}, IBAN {account['iban']}, BIC {account['bic']}"


def _who_pays(net: dict[str, Any], currency: str) -> str:
    if net.get("payer") is None or not net["amount_minor"]:
        return "settled: nothing to pay"
    amount = _money(net["amount_minor"], currency)
    if net["payer"] == "partners":  # the operator's own net: its result in the clearing
        return f"the partners pay {net['payee']} {amount} (through its clearing)"
    if net["payee"] == "partners":
        return f"{net['payer']} pays the partners {amount} (through its clearing)"
    return f"{net['payer']} pays {net['payee']} {amount}"


def _rate(rate_minor_per_point: str, currency: str) -> str:
    """A rate in minor units per point, shown in the currency's major unit."""
    exponent = minor_exponent(currency)
    text = decimal_text(Decimal(rate_minor_per_point).scaleb(-exponent))
    whole, _, fraction = text.partition(".")
    if exponent and len(fraction) < exponent:  # 0.1 RUB reads 0.10 RUB
        text = f"{whole}.{fraction.ljust(exponent, '0')}"
    return f"{text} {currency}"


def _money(minor: int, currency: str) -> str:
    """Major units, grouped, with the currency: 123456 EUR → "1,234.56 EUR"."""
    whole, _, fraction = format_minor(minor, currency).partition(".")
    sign = "-" if whole.startswith("-") else ""
    grouped = f"{int(whole.lstrip('-')):,}"
    return f"{sign}{grouped}{'.' + fraction if fraction else ''} {currency}"


def _signed(minor: int, currency: str) -> str:
    if not minor:
        return "-"
    return ("+" if minor > 0 else "") + _money(minor, currency)


def _t(text: str) -> str:
    """Text as the embedded font can show it: a character it has no glyph for (CJK, say)
    becomes '?', the same in every statement, rather than an empty box."""
    glyphs = _glyphs()
    return "".join(c if ord(c) in glyphs else "?" for c in text)


@cache
def _glyphs() -> frozenset[int]:
    """The code points both embedded faces cover."""
    faces = [TTFont(FONTS_DIR / name).getBestCmap() for name in FONT_FILES.values()]
    return frozenset(set(faces[0]).intersection(*faces[1:]))

"""A partner's statement for a run: JSON for machines, CSV for spreadsheets.

Both are pure functions of the run, so the same run gives the same bytes. A statement
lists the partner's lines by counterparty and reason, its totals and net position per
currency, the payments that settle it, and the cut (entries and checkpoint) it covers.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from ledger.canonical import canonical_bytes
from ledger.timefmt import format_time_us
from settlement.journal_view import OPERATOR
from settlement.money import decimal_text, format_minor
from settlement.run import Run

REVISION_FIRST = 1


def statement_json(
    run: Run, party: str, revision: int | None = None, previous_run_id: str | None = None
) -> dict[str, Any]:
    if revision is None:
        revision = run.revision
    if previous_run_id is None and run.previous is not None:
        previous_run_id = run.previous.run_id
    lines = []
    totals: dict[str, dict[str, int]] = {}
    for index, line in enumerate(run.lines):
        if party not in (line.payer, line.payee):
            continue
        direction = "payable" if line.payer == party else "receivable"
        counterparty = line.payee if line.payer == party else line.payer
        lines.append(
            {
                "line": index,
                "counterparty": counterparty,
                "reason": line.reason,
                "direction": direction,
                "points": line.points,
                "rate_per_point": decimal_text(line.rate_per_point),
                "currency": line.currency,
                "amount_minor": line.amount_minor,
                "entries": line.entries,
                "first_seq": line.first_seq,
                "last_seq": line.last_seq,
            }
        )
        bucket = totals.setdefault(line.currency, {"receivable": 0, "payable": 0})
        bucket[direction] += line.amount_minor
    net = [
        {"currency": c, "net_minor": v, "direction": _direction(v)}
        for (p, c), v in sorted(run.positions.items())
        if p == party
    ]
    return {
        "statement": f"{run.run_id}/{party}/r{revision}",
        "revision": revision,
        "replaces": f"{previous_run_id}/{party}" if previous_run_id else None,
        "run": run.run_id,
        "period": run.period,
        "party": party,
        "settlement_currency": run.currencies.get(party, "all (clearing)"),
        "cut": {"start_seq": run.start_seq, "end_seq": run.end_seq, "checkpoint": run.checkpoint},
        "mode": run.mode,
        "lines": lines,
        "totals": [{"currency": c, **t} for c, t in sorted(totals.items())],
        "conversions": [
            {
                "line": c.line_index,
                "from": c.from_currency,
                "to": c.to_currency,
                "rate": decimal_text(c.rate),
                "from_minor": c.from_minor,
                "to_minor": c.to_minor,
            }
            for c in run.conversions
            # the operator's clearing account carries the other side of every conversion
            if party in (c.party, OPERATOR)
        ],
        "net": net,
        # What this revision posts: the whole net for a first revision, the difference
        # from the superseded one for a correction (docs/SETTLEMENT.md §9).
        "position_changes": [
            {"currency": c, "net_minor": v, "direction": _direction(v)}
            for (p, c), v in sorted(run.changes.items())
            if p == party
        ],
        "notes": period_notes(run),
        "payments": [
            {
                "end_to_end_id": p.end_to_end_id,
                "payer": p.payer,
                "payee": p.payee,
                "currency": p.currency,
                "amount_minor": p.amount_minor,
            }
            for p in run.payments
            if party in (p.payer, p.payee)
        ],
    }


def period_notes(run: Run) -> list[str]:
    """What the period holds, said in words (docs/SETTLEMENT.md §3, §9)."""
    notes = []
    cut = run.end_seq if run.cut_size < 0 else run.cut_size
    if run.bounds is not None:
        start, end = format_time_us(run.bounds.start_us), format_time_us(run.bounds.end_us)
        notes.append(
            f"Period {run.period}: entries recorded from {start} to before {end}"
            f" (the period's bounds in {run.bounds.timezone}), entries {run.start_seq}"
            f" to {run.end_seq - 1}."
        )
        if run.end_seq < cut:
            notes.append(
                f"Entries {run.end_seq} to {cut - 1}, recorded at or after {end} but before"
                f" this run's cut ({cut}), belong to the next period, not to this one."
            )
        if run.entries_before_start:
            notes.append(
                f"{run.entries_before_start} entries recorded before {start} that no earlier"
                " run settled are included."
            )
    if run.previous is not None:
        notes.append(
            f"Revision {run.revision} supersedes run {run.previous.run_id}: the lines and"
            " net positions are the period's in full; this revision posts and pays only the"
            " difference (position changes and payments)."
        )
    return notes


def _direction(net_minor: int) -> str:
    if net_minor > 0:
        return "to receive"
    return "to pay" if net_minor < 0 else "settled"


def statement_bytes_json(statement: dict[str, Any]) -> bytes:
    return canonical_bytes(statement) + b"\n"


def statement_bytes_csv(statement: dict[str, Any]) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        [
            "statement",
            statement["statement"],
            "period",
            statement["period"],
            "entries",
            f"{statement['cut']['start_seq']}-{statement['cut']['end_seq']}",
        ]
    )
    writer.writerow(
        [
            "line",
            "counterparty",
            "reason",
            "direction",
            "points",
            "rate_per_point",
            "currency",
            "amount",
            "entries",
            "first_seq",
            "last_seq",
        ]
    )
    for line in statement["lines"]:
        writer.writerow(
            [
                line["line"],
                line["counterparty"],
                line["reason"],
                line["direction"],
                line["points"],
                line["rate_per_point"],
                line["currency"],
                format_minor(line["amount_minor"], line["currency"]),
                line["entries"],
                line["first_seq"],
                line["last_seq"],
            ]
        )
    for net in statement["net"]:
        writer.writerow(
            [
                "net",
                "",
                "",
                net["direction"],
                "",
                "",
                net["currency"],
                format_minor(net["net_minor"], net["currency"]),
                "",
                "",
                "",
            ]
        )
    for note in statement.get("notes", ()):
        writer.writerow(["note", note, "", "", "", "", "", "", "", "", ""])
    return out.getvalue().encode("utf-8")

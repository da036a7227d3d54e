"""A partner's statement for a run: JSON for machines, CSV for spreadsheets (the PDF is
``settlement.pdf``), all three from the one dictionary ``statement_json`` builds.

A statement is a pure function of the run and of ``StatementFacts`` — what the run
document does not keep, read from the same journal prefix (``read_statement_facts``):
the flows of each pair **before** the run nets them (docs/SETTLEMENT.md §6.1) and the
parties' legal names. It shows what the party owes each counterparty and what each owes
it, by reason (gross, both ways), then the net per counterparty and currency, the
conversions, the party's net position, the payments with the payee's bank account, the
due date (docs/SETTLEMENT.md "Statements"), and the entries it covers, said the same
way in every format: ``start_seq <= seq < end_seq``.

Units: JSON and CSV carry integers in minor units in fields whose names end in
``_minor`` (prices per point: ``rate_per_point`` / ``price_per_point_minor``, exact
decimals of minor units), each next to its currency; the PDF shows major units.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from ledger.canonical import canonical_bytes
from ledger.timefmt import format_time_us
from settlement import journal_view
from settlement.journal_view import OPERATOR
from settlement.money import decimal_text, half_even_to_int
from settlement.obligations import Bucket, LineKey, Obligations
from settlement.run import Run

REVISION_FIRST = 1
PAYMENT_TERM_DAYS = 14  # due: the period's last day + 14 (docs/SETTLEMENT.md "Statements")
OPERATOR_LEGAL_NAME = "Coalition operator"  # unless the clearing account names it
_ONBOARDED = b'"partner_onboarded"'

Pair = tuple[str, str, str, Decimal, str]  # (payer, payee, reason, rate, currency)


@dataclass(frozen=True, slots=True)
class Gross:
    """What flowed one way for a (pair, reason, rate, currency) before netting."""

    points: int = 0
    entries: int = 0
    first_seq: int = -1
    last_seq: int = -1


@dataclass(frozen=True, slots=True)
class StatementFacts:
    """What a statement shows that the run document does not keep."""

    gross: dict[Pair, Gross] = field(default_factory=dict)
    legal_names: dict[str, str] = field(default_factory=dict)
    clearing_account: dict[str, str] | None = None  # the coalition's, from configuration


def read_statement_facts(
    entries: Iterable[bytes],
    run: Run,
    terms_entries: Sequence[bytes] | None = None,
    *,
    clearing_account: dict[str, str] | None = None,
) -> StatementFacts:
    """Stream the run's journal prefix (entries 0 … cut−1) again: the events priced as
    the run prices them, aggregated per direction (not netted), and legal names from
    ``partner_onboarded`` (the last one of each partner before the cut)."""
    cut = run.end_seq if run.cut_size < 0 else run.cut_size
    legal_names: dict[str, str] = {}

    def watched(stream: Iterable[bytes]) -> Iterator[bytes]:
        for seq, canonical in enumerate(stream):
            if seq < cut and _ONBOARDED in canonical:
                entry = orjson.loads(canonical)
                meta = entry["meta"]
                if entry["kind"] == "partner_onboarded" and meta.get("legal_name"):
                    legal_names[str(meta["partner"])] = str(meta["legal_name"])
            yield canonical

    if terms_entries is None:
        entries = list(entries)
        terms_entries = entries
    terms = journal_view.read_terms(terms_entries, cut)
    obligations = Obligations()
    journal_view.read(
        watched(entries), run.start_seq, run.end_seq, obligations, cut_size=cut, terms=terms
    )
    return statement_facts_from(obligations.buckets, legal_names, clearing_account)


def statement_facts_from(
    buckets: dict[LineKey, Bucket],
    legal_names: dict[str, str],
    clearing_account: dict[str, str] | None = None,
) -> StatementFacts:
    """Statement facts from what the run's own read aggregated (``compute_run_read``):
    the same as ``read_statement_facts`` gives, without reading the journal again."""
    gross: dict[Pair, Gross] = {}
    for key, bucket in buckets.items():
        if bucket.points == 0:
            continue
        # A bucket that went below zero (refunds of earlier redemptions) flowed back.
        payer, payee = (key.payer, key.payee) if bucket.points > 0 else (key.payee, key.payer)
        pair = (payer, payee, key.reason, key.rate_per_point, key.currency)
        seen = gross.get(pair, Gross())
        firsts = [s for s in (seen.first_seq, bucket.first_seq) if s >= 0]
        gross[pair] = Gross(
            seen.points + abs(bucket.points),
            seen.entries + bucket.entries,
            min(firsts) if firsts else -1,
            max(seen.last_seq, bucket.last_seq),
        )
    return StatementFacts(dict(sorted(gross.items())), dict(legal_names), clearing_account)


def entries_text(start_seq: int, end_seq: int) -> str:
    """The period's entries as docs/SETTLEMENT.md §1 defines them: half-open."""
    return f"{start_seq} <= seq < {end_seq}"


def statement_json(
    run: Run,
    party: str,
    facts: StatementFacts | None = None,
    *,
    revision: int | None = None,
    previous_run_id: str | None = None,
) -> dict[str, Any]:
    if facts is None:
        facts = StatementFacts()
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
        lines.append(
            {
                "line": index,
                "counterparty": line.payee if line.payer == party else line.payer,
                "reason": line.reason,
                "direction": direction,
                "payer": line.payer,
                "payee": line.payee,
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
    gross = _gross_rows(run, party, facts)
    names = {p: legal_name(facts, p) for p in sorted({g["counterparty"] for g in gross} | {party})}
    for row in gross:
        row["counterparty_legal_name"] = names[row["counterparty"]]
    own = [(c, v) for (p, c), v in sorted(run.positions.items()) if p == party]
    net = [{"currency": c, "net_minor": v, "direction": _direction(v)} for c, v in own]
    due = due_date(run)
    return {
        "statement": f"{run.run_id}/{party}/r{revision}",
        "revision": revision,
        "replaces": f"{previous_run_id}/{party}" if previous_run_id else None,
        "run": run.run_id,
        "period": run.period,
        "party": party,
        "legal_name": names[party],
        "settlement_currency": run.currencies.get(party, "all (clearing)"),
        "bank_account": bank_account(run, facts, party),
        "entries": entries_text(run.start_seq, run.end_seq),
        "cut": {"start_seq": run.start_seq, "end_seq": run.end_seq, "checkpoint": run.checkpoint},
        "mode": run.mode,
        "due": due,
        "units": "amounts in minor units (*_minor), rates in minor units per point",
        # What flowed each way before netting, then the net per counterparty.
        "gross": gross,
        "counterparties": _by_counterparty(party, gross, names),
        "lines": lines,  # the run's lines (netted, docs/SETTLEMENT.md §6.1)
        "totals": [{"currency": c, **t} for c, t in sorted(totals.items())],
        "conversions": [
            {
                "line": c.line_index,
                "party": c.party,
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
        "net_position": [_said(party, c, v) for c, v in own],
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
                "payee_legal_name": legal_name(facts, p.payee),
                "payee_bank_account": bank_account(run, facts, p.payee),
                "due_date": due["date"],
            }
            for p in run.payments
            if party in (p.payer, p.payee)
        ],
    }


def legal_name(facts: StatementFacts, party: str) -> str:
    if party == OPERATOR:
        account = facts.clearing_account
        return account["name"] if account else OPERATOR_LEGAL_NAME
    return facts.legal_names.get(party, party)


def bank_account(run: Run, facts: StatementFacts, party: str) -> dict[str, str] | None:
    if party == OPERATOR:
        return None if facts.clearing_account is None else dict(facts.clearing_account)
    found = run.bank_accounts.get(party)
    return None if found is None else {k: found[k] for k in ("iban", "bic", "name")}


def due_date(run: Run) -> dict[str, Any]:
    """The rule of docs/SETTLEMENT.md "Statements": a first revision of a calendar period
    is due on the period's last day (in the coalition's time zone) + 14 days; a
    correction, or a run under a free label, 14 days after its approval."""
    if run.bounds is None or run.revision != REVISION_FIRST:
        return {"date": None, "rule": f"{PAYMENT_TERM_DAYS} days after this run's approval"}
    zone = ZoneInfo(run.bounds.timezone)
    end = datetime.fromtimestamp(run.bounds.end_us / 1_000_000, UTC).astimezone(zone)
    last_day = end.date() - timedelta(days=1)
    return {
        "date": (last_day + timedelta(days=PAYMENT_TERM_DAYS)).isoformat(),
        "rule": f"the period's last day ({last_day.isoformat()}) + {PAYMENT_TERM_DAYS} days",
    }


def _gross_rows(run: Run, party: str, facts: StatementFacts) -> list[dict[str, Any]]:
    """The party's flows one way and the other, per (counterparty, reason, rate,
    currency). The way against the run's line is rounded half-even on its own; the
    line's way carries the line's amount plus that, so the two net to the line exactly.
    Without facts (no journal at hand) each line stands for its own gross."""
    line_of = {
        (x.payer, x.payee, x.reason, x.rate_per_point, x.currency): i
        for i, x in enumerate(run.lines)
    }
    flows = dict(facts.gross)
    if not flows:
        flows = {
            (x.payer, x.payee, x.reason, x.rate_per_point, x.currency): Gross(
                x.points, x.entries, x.first_seq, x.last_seq
            )
            for x in run.lines
        }
    rows: list[dict[str, Any]] = []
    for pair, flow in flows.items():
        payer, payee, reason, rate, currency = pair
        if party not in (payer, payee):
            continue
        reverse = (payee, payer, reason, rate, currency)
        if pair in line_of:
            line: int | None = line_of[pair]
            back = flows.get(reverse)
            against = 0 if back is None else half_even_to_int(back.points * rate)
            amount = run.lines[line_of[pair]].amount_minor + against
        else:
            line = line_of.get(reverse)
            amount = half_even_to_int(flow.points * rate)
        rows.append(
            {
                "counterparty": payee if payer == party else payer,
                "reason": reason,
                "direction": "payable" if payer == party else "receivable",
                "payer": payer,
                "payee": payee,
                "points": flow.points,
                "rate_per_point": decimal_text(rate),
                "currency": currency,
                "amount_minor": amount,
                "line": line,  # the run's line it nets into (None: netted to zero)
                "entries": flow.entries,
                "first_seq": flow.first_seq,
                "last_seq": flow.last_seq,
            }
        )
    order = {"payable": 0, "receivable": 1}
    rows.sort(
        key=lambda r: (
            r["counterparty"] != OPERATOR,  # the operator's charges first, then partners
            r["counterparty"],
            r["currency"],
            r["reason"],
            order[r["direction"]],
            Decimal(r["rate_per_point"]),
        )
    )
    return rows


def _by_counterparty(
    party: str, gross: list[dict[str, Any]], names: dict[str, str]
) -> list[dict[str, Any]]:
    sums: dict[tuple[str, str], list[int]] = {}
    for row in gross:
        bucket = sums.setdefault((row["counterparty"], row["currency"]), [0, 0])
        bucket[0 if row["direction"] == "payable" else 1] += row["amount_minor"]
    out = []
    order = sorted(sums, key=lambda k: (k[0] != OPERATOR, k))
    for counterparty, currency in order:
        payable, receivable = sums[(counterparty, currency)]
        net = receivable - payable
        payer, payee = (counterparty, party) if net > 0 else (party, counterparty)
        out.append(
            {
                "counterparty": counterparty,
                "legal_name": names[counterparty],
                "currency": currency,
                "payable_minor": payable,
                "receivable_minor": receivable,
                "net_minor": abs(net),
                "net_direction": _direction(net),
                "payer": payer if net else None,
                "payee": payee if net else None,
            }
        )
    return out


def _said(party: str, currency: str, net_minor: int) -> dict[str, Any]:
    """A net position as who pays whom: a partner's position is against the coalition's
    clearing; the coalition's own against the partners (through that clearing)."""
    other = OPERATOR if party != OPERATOR else "partners"
    payer, payee = (other, party) if net_minor > 0 else (party, other)
    return {
        "currency": currency,
        "amount_minor": abs(net_minor),
        "direction": _direction(net_minor),
        "payer": payer if net_minor else None,
        "payee": payee if net_minor else None,
    }


def period_notes(run: Run) -> list[str]:
    """What the period holds, said in words (docs/SETTLEMENT.md §3, §9)."""
    notes = []
    cut = run.end_seq if run.cut_size < 0 else run.cut_size
    if run.bounds is not None:
        start, end = format_time_us(run.bounds.start_us), format_time_us(run.bounds.end_us)
        notes.append(
            f"Period {run.period}: entries recorded from {start} to before {end}"
            f" (the period's bounds in {run.bounds.timezone}), entries"
            f" {entries_text(run.start_seq, run.end_seq)}."
        )
        if run.end_seq < cut:
            notes.append(
                f"Entries {entries_text(run.end_seq, cut)}, recorded at or after {end} but"
                f" before this run's cut ({cut}), belong to the next period, not to this one."
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


CSV_COLUMNS = (
    "record",  # gross | counterparty_net | conversion | net_position | payment | note
    "counterparty",
    "reason",
    "direction",  # payable / receivable for the party; who pays whom: payer, payee
    "points",
    "price_per_point_minor",
    "currency",
    "amount_minor",
    "payer",
    "payee",
    "counterparty_legal_name",
    "run_line",
    "entries",
    "first_seq",
    "last_seq",
    "reference",
    "converted_currency",
    "converted_amount_minor",
    "fx_rate",
    "iban",
    "bic",
    "account_name",
    "due_date",
    "text",
)


def statement_bytes_csv(statement: dict[str, Any]) -> bytes:
    """Key-value rows about the statement, then one header row (``CSV_COLUMNS``) and the
    records. Every amount is an integer in minor units of the row's currency; a net says
    who pays whom (payer, payee) and is never negative."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    own = statement.get("bank_account") or {}
    due = statement["due"]
    writer.writerow(
        [
            "statement",
            statement["statement"],
            "period",
            statement["period"],
            "entries",
            statement["entries"],
            "due_date",
            due["date"] or "",
            "due_rule",
            due["rule"],
        ]
    )
    writer.writerow(
        [
            "party",
            statement["party"],
            "legal_name",
            statement["legal_name"],
            "settlement_currency",
            statement["settlement_currency"],
            "iban",
            own.get("iban", ""),
            "bic",
            own.get("bic", ""),
            "account_name",
            own.get("name", ""),
        ]
    )
    writer.writerow(CSV_COLUMNS)

    def record(kind: str, **values: Any) -> None:
        unknown = set(values) - set(CSV_COLUMNS)
        assert not unknown, unknown
        writer.writerow(
            [kind] + ["" if values.get(c) is None else values.get(c, "") for c in CSV_COLUMNS[1:]]
        )

    for g in statement["gross"]:
        record(
            "gross",
            counterparty=g["counterparty"],
            reason=g["reason"],
            direction=g["direction"],
            points=g["points"],
            price_per_point_minor=g["rate_per_point"],
            currency=g["currency"],
            amount_minor=g["amount_minor"],
            payer=g["payer"],
            payee=g["payee"],
            counterparty_legal_name=g["counterparty_legal_name"],
            run_line=g["line"],
            entries=g["entries"],
            first_seq=g["first_seq"],
            last_seq=g["last_seq"],
        )
    for n in statement["counterparties"]:
        record(
            "counterparty_net",
            counterparty=n["counterparty"],
            direction=n["net_direction"],
            currency=n["currency"],
            amount_minor=n["net_minor"],
            payer=n["payer"],
            payee=n["payee"],
            counterparty_legal_name=n["legal_name"],
            text=f"payable {n['payable_minor']}, receivable {n['receivable_minor']}",
        )
    for c in statement["conversions"]:
        record(
            "conversion",
            counterparty=c["party"],
            currency=c["from"],
            amount_minor=c["from_minor"],
            run_line=c["line"],
            converted_currency=c["to"],
            converted_amount_minor=c["to_minor"],
            fx_rate=c["rate"],
        )
    for n in statement["net_position"]:
        record(
            "net_position",
            direction=n["direction"],
            currency=n["currency"],
            amount_minor=n["amount_minor"],
            payer=n["payer"],
            payee=n["payee"],
            due_date=due["date"],
        )
    for p in statement["payments"]:
        account = p["payee_bank_account"] or {}
        record(
            "payment",
            currency=p["currency"],
            amount_minor=p["amount_minor"],
            payer=p["payer"],
            payee=p["payee"],
            counterparty_legal_name=p["payee_legal_name"],
            reference=p["end_to_end_id"],
            iban=account.get("iban"),
            bic=account.get("bic"),
            account_name=account.get("name"),
            due_date=p["due_date"],
        )
    for note in statement.get("notes", ()):
        record("note", text=note)
    return out.getvalue().encode("utf-8")

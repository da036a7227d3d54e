"""A settlement run: the period's lines priced and rounded, converted where currencies
differ, netted per party, and turned into payments — a pure function of the journal
prefix up to the cut, so that a re-run (from the database or an export) gives the same
bytes. docs/SETTLEMENT.md is the normative description.

A revision (a correction) is computed whole — what the period is, as of its later cut —
and carries what the revision it supersedes settled (``Previous``): approval posts only
the difference in positions, and its payments are the difference in flows, so that
over all revisions each party is owed and paid what the latest says.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ledger.canonical import canonical_bytes
from ledger.timefmt import format_time_us
from settlement import journal_view
from settlement.allocation import allocate
from settlement.journal_view import OPERATOR, Facts, TermsTable
from settlement.money import decimal_text, half_even_to_int, minor_exponent
from settlement.obligations import Bucket, LineKey, Obligations

MODES = ("multilateral", "bilateral")


class SettlementError(ValueError):
    """The run cannot be computed as asked (missing rate, terms, period overlap …)."""


@dataclass(frozen=True, slots=True)
class Line:
    payer: str
    payee: str
    reason: str
    rate_per_point: Decimal
    currency: str
    points: int
    amount_minor: int
    entries: int
    first_seq: int
    last_seq: int
    terms_versions: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Conversion:
    party: str
    line_index: int
    from_currency: str
    to_currency: str
    rate: Decimal
    from_minor: int
    to_minor: int


@dataclass(frozen=True, slots=True)
class Payment:
    end_to_end_id: str
    payer: str
    payee: str
    currency: str
    amount_minor: int


Flows = dict[tuple[str, str, str], int]  # (low, high, currency): + means low pays high


@dataclass(frozen=True, slots=True)
class PeriodBounds:
    """The period's label in the coalition's time zone: [start_us, end_us)."""

    start_us: int
    end_us: int
    timezone: str


@dataclass(frozen=True, slots=True)
class Previous:
    """What the superseded revision settled: its full positions and flows."""

    run_id: str
    approved_seq: int
    positions: dict[tuple[str, str], int]
    flows: Flows


@dataclass(frozen=True, slots=True)
class Run:
    run_id: str
    period: str
    start_seq: int
    end_seq: int
    checkpoint: dict[str, Any] | None
    mode: str
    lines: tuple[Line, ...]
    conversions: tuple[Conversion, ...]
    positions: dict[tuple[str, str], int]
    payments: tuple[Payment, ...]
    gross_minor: dict[str, int]
    net_minor: dict[str, int]
    bank_accounts: dict[str, dict[str, str]]
    currencies: dict[str, str]
    revision: int = 1
    cut_size: int = -1  # facts up to here; -1: end_seq
    bounds: PeriodBounds | None = None
    flows: Flows = field(default_factory=dict)
    previous: Previous | None = None
    changes: dict[tuple[str, str], int] = field(default_factory=dict)
    entries_before_start: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "period": self.period,
            "revision": self.revision,
            "cut": {
                "start_seq": self.start_seq,
                "end_seq": self.end_seq,
                "checkpoint": self.checkpoint,
            },
            "period_bounds": None
            if self.bounds is None
            else {
                "start": format_time_us(self.bounds.start_us),
                "end": format_time_us(self.bounds.end_us),
                "timezone": self.bounds.timezone,
                "entries_before_start": self.entries_before_start,
            },
            "mode": self.mode,
            "lines": [_line_json(i, line) for i, line in enumerate(self.lines)],
            "conversions": [
                {
                    "party": c.party,
                    "line": c.line_index,
                    "from": c.from_currency,
                    "to": c.to_currency,
                    "rate": decimal_text(c.rate),
                    "from_minor": c.from_minor,
                    "to_minor": c.to_minor,
                }
                for c in self.conversions
            ],
            "positions": _positions_json(self.positions),
            "flows": _flows_json(self.flows),
            "supersedes": None
            if self.previous is None
            else {
                "run": self.previous.run_id,
                "approved_seq": self.previous.approved_seq,
                "positions": _positions_json(self.previous.positions),
                "flows": _flows_json(self.previous.flows),
            },
            "position_changes": _positions_json(self.changes),
            "payments": [
                {
                    "end_to_end_id": p.end_to_end_id,
                    "payer": p.payer,
                    "payee": p.payee,
                    "currency": p.currency,
                    "amount_minor": p.amount_minor,
                }
                for p in self.payments
            ],
            "gross_minor": self.gross_minor,
            "net_minor": self.net_minor,
        }

    def to_bytes(self) -> bytes:
        return canonical_bytes(self.to_json())

    @property
    def is_correction(self) -> bool:
        return self.previous is not None


def _positions_json(positions: dict[tuple[str, str], int]) -> list[dict[str, Any]]:
    return [{"party": p, "currency": c, "net_minor": v} for (p, c), v in sorted(positions.items())]


def _flows_json(flows: Flows) -> list[dict[str, Any]]:
    return [
        {"payer": payer, "payee": payee, "currency": c, "amount_minor": amount}
        for (payer, payee, c), amount in _directed(flows)
    ]


def _directed(flows: Flows) -> list[tuple[tuple[str, str, str], int]]:
    return sorted(
        ((low, high, c) if v > 0 else (high, low, c), abs(v))
        for (low, high, c), v in flows.items()
        if v
    )


def previous_of(run: Run, approved_seq: int) -> Previous:
    """What ``run`` settled once approved (at ``approved_seq``): for its correction."""
    return Previous(run.run_id, approved_seq, dict(run.positions), dict(run.flows))


def previous_from_json(doc: dict[str, Any], approved_seq: int) -> Previous:
    """The same from a run document (or a ``supersedes`` block: the same members)."""
    positions = {(p["party"], p["currency"]): int(p["net_minor"]) for p in doc["positions"]}
    flows: Flows = {}
    for f in doc["flows"]:
        low, high = sorted((f["payer"], f["payee"]))
        amount = int(f["amount_minor"])
        flows[(low, high, f["currency"])] = amount if f["payer"] == low else -amount
    return Previous(str(doc["run"]), approved_seq, positions, flows)


def _line_json(index: int, line: Line) -> dict[str, Any]:
    return {
        "line": index,
        "payer": line.payer,
        "payee": line.payee,
        "reason": line.reason,
        "rate_per_point": decimal_text(line.rate_per_point),
        "currency": line.currency,
        "points": line.points,
        "amount_minor": line.amount_minor,
        "entries": line.entries,
        "first_seq": line.first_seq,
        "last_seq": line.last_seq,
        "terms_versions": [list(v) for v in line.terms_versions],
    }


def compute_run(
    entries: Iterable[bytes],
    *,
    run_id: str,
    period: str,
    start_seq: int,
    end_seq: int,
    checkpoint: dict[str, Any] | None = None,
    mode: str | None = None,
    cut_size: int | None = None,
    terms_entries: Iterable[bytes] | None = None,
    bounds: PeriodBounds | None = None,
    previous: Previous | None = None,
    revision: int = 1,
) -> Run:
    """The run of the period's entries (``compute_run_read`` says how)."""
    return compute_run_read(
        entries,
        run_id=run_id,
        period=period,
        start_seq=start_seq,
        end_seq=end_seq,
        checkpoint=checkpoint,
        mode=mode,
        cut_size=cut_size,
        terms_entries=terms_entries,
        bounds=bounds,
        previous=previous,
        revision=revision,
    )[0]


def compute_run_read(
    entries: Iterable[bytes],
    *,
    run_id: str,
    period: str,
    start_seq: int,
    end_seq: int,
    checkpoint: dict[str, Any] | None = None,
    mode: str | None = None,
    cut_size: int | None = None,
    terms_entries: Iterable[bytes] | None = None,
    bounds: PeriodBounds | None = None,
    previous: Previous | None = None,
    revision: int = 1,
) -> tuple[Run, Facts, dict[LineKey, Bucket]]:
    """The run of the period's entries ``start_seq … end_seq−1``, with facts (terms,
    currencies, bank accounts, rates) recorded before ``cut_size`` (default end_seq).

    ``entries`` are the journal's canonical entries from 0 up to the cut, in order;
    ``terms_entries`` any entries holding every ``partner_terms`` before the cut (the
    database passes those alone); without it ``entries`` is read twice (a list or
    other sequence), the first time by a byte search only. Also returns the facts and
    line buckets it read, so that statements need not read the journal again."""
    cut = end_seq if cut_size is None else cut_size
    if not 0 <= start_seq <= end_seq:
        raise SettlementError(f"the cut {end_seq} precedes the period's start {start_seq}")
    if end_seq > cut:
        raise SettlementError(f"the period's entries end at {end_seq}, after the cut {cut}")
    if terms_entries is None:
        if not isinstance(entries, Sequence):
            entries = list(entries)
        terms_entries = entries
    terms: TermsTable = journal_view.read_terms(terms_entries, cut)
    obligations = Obligations()
    facts = journal_view.read(
        _iter(entries), start_seq, end_seq, obligations, cut_size=cut, terms=terms
    )
    before_start = _check_bounds(facts, start_seq, end_seq, cut, bounds)
    buckets = obligations.buckets
    lines = _lines(buckets)
    run_mode = mode or _mode(facts)
    if run_mode not in MODES:
        raise SettlementError(f"mode must be one of {MODES}")
    positions, conversions = _positions(lines, facts, run_id)
    for currency in {c for _, c in positions}:
        total = sum(v for (_, c), v in positions.items() if c == currency)
        assert total == 0, f"net positions in {currency} sum to {total}, not zero"
    flows = _flows(run_mode, lines, conversions, positions)
    before_positions = previous.positions if previous else {}
    before_flows = previous.flows if previous else {}
    changes = _difference(positions, before_positions)
    payments = _payments(run_id, _difference(flows, before_flows))
    gross: dict[str, int] = {}
    for line in lines:
        gross[line.currency] = gross.get(line.currency, 0) + line.amount_minor
    net: dict[str, int] = {}
    for payment in payments:
        net[payment.currency] = net.get(payment.currency, 0) + payment.amount_minor
    run = Run(
        run_id,
        period,
        start_seq,
        end_seq,
        checkpoint,
        run_mode,
        tuple(lines),
        tuple(conversions),
        positions,
        tuple(payments),
        dict(sorted(gross.items())),
        dict(sorted(net.items())),
        dict(facts.bank_accounts),
        dict(facts.currencies),
        revision=revision,
        cut_size=cut,
        bounds=bounds,
        flows=flows,
        previous=previous,
        changes=changes,
        entries_before_start=before_start,
    )
    return run, facts, buckets


def _iter(entries: Iterable[bytes]) -> Iterator[bytes]:
    return iter(entries)


def _difference(now: dict[Any, int], before: dict[Any, int]) -> dict[Any, int]:
    keys = sorted(set(now) | set(before))
    return {k: now.get(k, 0) - before.get(k, 0) for k in keys if now.get(k, 0) != before.get(k, 0)}


def _check_bounds(
    facts: Facts, start_seq: int, end_seq: int, cut: int, bounds: PeriodBounds | None
) -> int:
    """The period's entries are those not settled before whose time is before the
    period's end; the first entry at or after the end (if before the cut) ends them.
    Returns how many of them lie before the period's start (rolled in, unsettled)."""
    if bounds is None:
        return 0
    times = facts.entry_times_us
    if end_seq > start_seq and times[end_seq - 1] >= bounds.end_us:
        raise SettlementError(f"entry {end_seq - 1} is after the period's end")
    if end_seq < cut and times[end_seq] < bounds.end_us:
        raise SettlementError(f"entry {end_seq} is before the period's end but left out")
    from bisect import bisect_left

    return bisect_left(times, bounds.start_us, start_seq, end_seq) - start_seq


def _lines(buckets: dict[LineKey, Bucket]) -> list[Line]:
    """Net reversals into their line; a line that nets negative changes direction.

    Both directions of a pair are added up first (A owes B 50, B owes A 10 → A owes B
    40), so a reversal never overwrites a line going the other way."""
    merged: dict[LineKey, Bucket] = {}
    for key, bucket in buckets.items():
        canonical = key
        sign = 1
        if (key.payee, key.payer) < (key.payer, key.payee):
            canonical = LineKey(key.payee, key.payer, key.reason, key.rate_per_point, key.currency)
            sign = -1
        total = merged.setdefault(canonical, Bucket())
        total.points += sign * bucket.points
        total.entries += bucket.entries
        firsts = [s for s in (total.first_seq, bucket.first_seq) if s >= 0]
        total.first_seq = min(firsts) if firsts else -1
        total.last_seq = max(total.last_seq, bucket.last_seq)
        total.terms_versions |= bucket.terms_versions
    for key in list(merged):
        bucket = merged.pop(key)
        if bucket.points < 0:
            key = LineKey(key.payee, key.payer, key.reason, key.rate_per_point, key.currency)
            bucket.points = -bucket.points
        if bucket.points:
            merged[key] = bucket
    keys = sorted(merged, key=lambda k: (k.reason, k.currency, k.payer, k.payee, k.rate_per_point))
    amounts: dict[LineKey, int] = {}
    for group in {(k.reason, k.currency) for k in keys}:
        members = [k for k in keys if (k.reason, k.currency) == group]
        exact = [merged[k].points * k.rate_per_point for k in members]
        amounts.update(zip(members, allocate(exact), strict=True))
    return [
        Line(
            k.payer,
            k.payee,
            k.reason,
            k.rate_per_point,
            k.currency,
            merged[k].points,
            amounts[k],
            merged[k].entries,
            merged[k].first_seq,
            merged[k].last_seq,
            tuple(sorted(merged[k].terms_versions)),
        )
        for k in keys
    ]


def _mode(facts: Facts) -> str:
    """Bilateral only when every partner's terms in force at the cut say so."""
    at_cut_us = facts.entry_times_us[-1] if facts.entry_times_us else 0
    in_force = [facts.terms_at(partner, at_cut_us) for partner in facts.terms]
    modes = {found[1].mode for found in in_force if found is not None}
    return "bilateral" if modes == {"bilateral"} else "multilateral"


def _positions(
    lines: list[Line], facts: Facts, run_id: str
) -> tuple[dict[tuple[str, str], int], list[Conversion]]:
    positions: dict[tuple[str, str], int] = {}
    conversions: list[Conversion] = []

    def move(party: str, currency: str, amount: int) -> None:
        positions[(party, currency)] = positions.get((party, currency), 0) + amount

    for index, line in enumerate(lines):
        for party, sign in ((line.payee, 1), (line.payer, -1)):
            own = facts.currencies.get(party, line.currency) if party != OPERATOR else None
            if own is None or own == line.currency:
                move(party, line.currency, sign * line.amount_minor)
                continue
            rate = facts.fx_rates.get((run_id, line.currency, own))
            if rate is None:
                raise SettlementError(
                    f"record an fx_rate for run {run_id}: {line.currency} → {own}"
                )
            # The rate is per major unit (1 base = rate quote); minor units may differ.
            exact = (line.amount_minor * rate).scaleb(
                minor_exponent(own) - minor_exponent(line.currency)
            )
            converted = half_even_to_int(exact)
            conversions.append(
                Conversion(party, index, line.currency, own, rate, line.amount_minor, converted)
            )
            # The operator's clearing stands between the two currencies.
            move(party, own, sign * converted)
            move(OPERATOR, own, -sign * converted)
            move(OPERATOR, line.currency, sign * line.amount_minor)
    return {k: v for k, v in positions.items() if v}, conversions


def _flows(
    mode: str,
    lines: list[Line],
    conversions: list[Conversion],
    positions: dict[tuple[str, str], int],
) -> Flows:
    """Who pays whom, in full, for the period (before anything settled earlier)."""
    flows: Flows = {}

    def owe(payer: str, payee: str, currency: str, amount: int) -> None:
        low, high = sorted((payer, payee))
        signed = amount if payer == low else -amount
        flows[(low, high, currency)] = flows.get((low, high, currency), 0) + signed

    if mode == "multilateral":
        for (party, currency), amount in sorted(positions.items()):
            if party != OPERATOR:  # the operator's own result stays in its clearing
                owe(party, OPERATOR, currency, -amount)
    else:
        converted = {c.line_index: c for c in conversions}
        for index, line in enumerate(lines):
            conversion = converted.get(index)
            if conversion is None:
                owe(line.payer, line.payee, line.currency, line.amount_minor)
                continue
            # Across currencies the operator's clearing stands between the two.
            paid_in = conversion.to_currency if conversion.party == line.payer else line.currency
            paid = conversion.to_minor if conversion.party == line.payer else line.amount_minor
            got_in = line.currency if conversion.party == line.payer else conversion.to_currency
            got = line.amount_minor if conversion.party == line.payer else conversion.to_minor
            owe(line.payer, OPERATOR, paid_in, paid)
            owe(OPERATOR, line.payee, got_in, got)
    return {k: v for k, v in sorted(flows.items()) if v}


def _payments(run_id: str, flows: Flows) -> list[Payment]:
    return [
        Payment(f"{run_id}-{number:05d}", payer, payee, currency, amount)
        for number, ((payer, payee, currency), amount) in enumerate(_directed(flows), start=1)
    ]


def entries_behind(entries: Iterable[bytes], run: Run, line_index: int) -> list[int]:
    """The sequence numbers of the journal entries behind one line of ``run`` (in order;
    an entry appears once per event it contributed), by streaming the same prefix again."""
    line = run.lines[line_index]
    keys = frozenset(
        (a, b, line.reason, line.rate_per_point, line.currency)
        for a, b in ((line.payer, line.payee), (line.payee, line.payer))
    )
    tracer = Obligations(trace=keys)
    if not isinstance(entries, Sequence):
        entries = list(entries)
    terms = journal_view.read_terms(entries, _cut(run))
    journal_view.read(
        iter(entries), run.start_seq, run.end_seq, tracer, cut_size=_cut(run), terms=terms
    )
    return sorted(set(tracer.traced_seqs))


def _cut(run: Run) -> int:
    return run.end_seq if run.cut_size < 0 else run.cut_size

"""Can a settlement run be paid? The problems that stand between a run and its payment
file: a party to be paid with no bank account on record, and an exchange rate the run
needs but nobody recorded.

Both are judged on the journal's facts *at the run's cut* (entries before the signed
checkpoint the run was computed at),
because that is what the run and its payment file are computed from: a bank account
recorded after the cut does not make an already computed run payable.

- ``NO_BANK_ACCOUNT`` (party, currency): the party receives a payment of the run (it is
  the payee of one) and no ``partner_bank_account`` fact names it. The coalition itself
  pays and is paid through its clearing account, so it is never named.
- ``FX_RATE_MISSING`` (party, currency → quote currency): a line of the run is priced in
  ``currency`` and the party settles in ``quote currency``, and no ``fx_rate`` fact
  records that rate for this run id (``settlement.run`` refuses to compute without it).

The API and the CLI call this around compute (warnings) and approve (a refusal while
any problem remains); it reads the journal and writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from coalition import standby
from coalition.context import Conn
from ledger.journal import DEFAULT_CHAIN_ID
from settlement import journal_view
from settlement.journal_view import OPERATOR
from settlement.obligations import Obligations
from settlement.run import Run

NO_BANK_ACCOUNT = "NO_BANK_ACCOUNT"
FX_RATE_MISSING = "FX_RATE_MISSING"

# The facts payment depends on (kinds and meta fields as settlement.journal_view reads them).
_KINDS = ("partner_onboarded", "partner_bank_account", "fx_rate")


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    code: str
    party: str
    currency: str
    quote_currency: str | None = None

    def __str__(self) -> str:
        if self.code == FX_RATE_MISSING:
            return f"no {self.currency} → {self.quote_currency} rate recorded for {self.party}"
        return f"{self.party} has no bank account on record (paid in {self.currency})"


@dataclass(slots=True)
class PaymentFacts:
    """What payment depends on, as recorded in the journal before a cut."""

    currencies: dict[str, str] = field(default_factory=dict)
    bank_accounts: dict[str, dict[str, str]] = field(default_factory=dict)
    fx_rates: set[tuple[str, str, str]] = field(default_factory=set)  # (run, base, quote)


def facts_from_entries(entries: Iterable[Mapping[str, Any]]) -> PaymentFacts:
    """The facts from parsed journal entries (any order of kinds; later ones win)."""
    facts = PaymentFacts()
    for entry in entries:
        kind, meta = entry["kind"], entry["meta"]
        if kind == "partner_onboarded":
            facts.currencies[meta["partner"]] = meta["settlement_currency"]
        elif kind == "partner_bank_account":
            facts.bank_accounts[meta["partner"]] = {
                k: str(meta[k]) for k in ("iban", "bic", "name")
            }
        elif kind == "fx_rate":
            facts.fx_rates.add((meta["run"], meta["base"], meta["quote"]))
    return facts


def facts_at(conn: Conn, end_seq: int, chain_id: str = DEFAULT_CHAIN_ID) -> PaymentFacts:
    """The facts recorded before ``end_seq`` (by kind: no walk over the whole journal)."""
    rows = conn.execute(
        "SELECT canonical FROM ledger_entry WHERE chain_id = %s AND kind = ANY(%s)"
        " AND seq < %s ORDER BY seq",
        (chain_id, list(_KINDS), end_seq),
    ).fetchall()
    return facts_from_entries(json.loads(bytes(row[0])) for row in rows)


def problems(run: Run | Mapping[str, Any], facts: PaymentFacts | None = None) -> list[Problem]:
    """Every problem of a computed run: a ``settlement.run.Run`` (which carries its facts),
    or its run document (JSON, as stored) with the facts at its cut."""
    if isinstance(run, Run):
        document = run.to_json()
        facts = PaymentFacts(dict(run.currencies), dict(run.bank_accounts), set())
        fx_checked = False  # a Run exists only if every rate it needed was there
    else:
        document = dict(run)
        if facts is None:
            raise ValueError("a run document needs the facts at its cut")
        fx_checked = True
    found: set[Problem] = set()
    for payment in document["payments"]:
        payee = payment["payee"]
        if payee != OPERATOR and payee not in facts.bank_accounts:
            found.add(Problem(NO_BANK_ACCOUNT, payee, payment["currency"]))
    if fx_checked:
        lines = [(line["payer"], line["payee"], line["currency"]) for line in document["lines"]]
        found |= _missing_rates(document["run"], lines, facts.currencies, facts.fx_rates)
    return sorted(found)


def missing_fx_rates(
    entries: Iterable[bytes],
    terms_entries: Iterable[bytes],
    *,
    run_id: str,
    start_seq: int,
    end_seq: int,
    cut_size: int,
) -> list[Problem]:
    """Every rate a run of entries ``start_seq … end_seq−1`` with facts before
    ``cut_size`` would need and the journal lacks (``settlement.run`` stops at the first;
    this names them all). ``entries`` are the canonical entries from seq 0 to the cut,
    ``terms_entries`` any holding every ``partner_terms`` entry before it — as for
    ``settlement.run.compute_run``."""
    obligations = Obligations()
    terms = journal_view.read_terms(terms_entries, cut_size)
    facts = journal_view.read(
        entries, start_seq, end_seq, obligations, cut_size=cut_size, terms=terms
    )
    # Lines net both directions of a pair first; a line netting to zero needs no rate.
    net: dict[tuple[str, str, str, Decimal, str], int] = {}
    for key, bucket in obligations.buckets.items():
        low, high = sorted((key.payer, key.payee))
        sign = 1 if key.payer == low else -1
        canonical = (low, high, key.reason, key.rate_per_point, key.currency)
        net[canonical] = net.get(canonical, 0) + sign * bucket.points
    lines = [(low, high, currency) for (low, high, _, _, currency), v in net.items() if v]
    rates = set(facts.fx_rates)
    return sorted(_missing_rates(run_id, lines, facts.currencies, rates))


def _missing_rates(
    run_id: str,
    lines: Iterable[tuple[str, str, str]],
    currencies: Mapping[str, str],
    rates: Iterable[tuple[str, str, str]],
) -> set[Problem]:
    recorded = set(rates)
    found: set[Problem] = set()
    for payer, payee, currency in lines:
        for party in (payer, payee):
            if party == OPERATOR:
                continue
            own = currencies.get(party, currency)
            if own != currency and (run_id, currency, own) not in recorded:
                found.add(Problem(FX_RATE_MISSING, party, currency, own))
    return found


def run_problems(conn: Conn, run_id: str) -> list[Problem] | None:
    """The problems of a stored run, judged at its cut (None: no such run)."""
    row = conn.execute(
        "SELECT end_seq, run_bytes FROM coalition_settlement_run WHERE run_id = %s", (run_id,)
    ).fetchone()
    if row is None:
        return None
    run = json.loads(bytes(row[1]))
    return problems(run, facts_at(conn, cut_size(run)))


def cut_size(run: Mapping[str, Any]) -> int:
    """The tree size of a run document's signed cut: facts count up to it, which may lie
    past the run's last entry (a period's entries end at its label's end; the cut is
    when it was computed)."""
    return int(run["cut"]["checkpoint"]["tree_size"])


def approval_problems(conn: Conn, run_id: str) -> list[Problem]:
    """What must be recorded (and the run recomputed) before ``run_id`` may be approved:
    nothing for a run that is not awaiting approval (approve itself says why not)."""
    row = conn.execute(
        "SELECT status FROM coalition_settlement_run WHERE run_id = %s", (run_id,)
    ).fetchone()
    if row is None or row[0] != "computed":
        return []
    return run_problems(conn, run_id) or []


def pending_fx_rates(conn: Conn, period: str) -> list[Problem]:
    """The rates the next computation of ``period`` would lack, at the latest signed cut,
    named all at once after compute refused for the first one: the run it would make
    (its id and entries) is chosen as compute chooses it (``settle.run_range``)."""
    from coalition.settle import entries_until, get_run, run_id_of, run_range, timezone
    from settlement.periods import InvalidPeriod, period_bounds
    from settlement.run import PeriodBounds

    cut = conn.execute("SELECT coalesce(max(tree_size), 0) FROM ledger_checkpoint").fetchone()
    cut_size = int(cut[0]) if cut else 0
    latest = conn.execute(
        "SELECT run_id, status, revision, replaces_run_id FROM coalition_settlement_run"
        " WHERE period = %s ORDER BY revision DESC LIMIT 1",
        (period,),
    ).fetchone()
    revision, superseded, withdrawn = 1, None, ""
    if latest is not None:
        withdrawn = latest[0] if latest[1] == "computed" else ""
        revision = int(latest[2]) + 1
        # A computed run is withdrawn and the one it would have replaced is corrected.
        replaced = latest[3] if latest[1] == "computed" else latest[0]
        superseded = None if replaced is None else get_run(conn, replaced)
    try:
        _cycle, start_us, end_us = period_bounds(period, timezone())
        bounds: PeriodBounds | None = PeriodBounds(start_us, end_us, timezone())
    except InvalidPeriod:
        bounds = None
    start_seq, end_seq = run_range(conn, superseded, cut_size, bounds, withdrawn=withdrawn)
    if not 0 <= start_seq <= end_seq <= cut_size:
        return []
    return standby.read_prefix(
        conn,
        cut_size,
        lambda journal: missing_fx_rates(
            entries_until(journal, cut_size),
            _terms_entries(journal, cut_size),
            run_id=run_id_of(period, revision),
            start_seq=start_seq,
            end_seq=end_seq,
            cut_size=cut_size,
        ),
        what=f"rates pending for {period}",
    )


def _terms_entries(conn: Conn, cut_size: int) -> list[bytes]:
    rows = conn.execute(
        "SELECT canonical FROM ledger_entry WHERE chain_id = %s AND kind = 'partner_terms'"
        " AND seq < %s ORDER BY seq",
        (DEFAULT_CHAIN_ID, cut_size),
    ).fetchall()
    return [bytes(row[0]) for row in rows]


def describe(found: Iterable[Problem]) -> str:
    return "; ".join(str(p) for p in found)

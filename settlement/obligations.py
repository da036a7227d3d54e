"""Who owes whom for the period: priced lines from the journal's events.

- redemption: points issued by A and redeemed at B (A ≠ B) → A owes B points × B's
  redemption rate in force at the redemption (refunds of redemptions net against it);
- issuance: points A issued (net of clawbacks) × A's issuance price → A owes the operator;
- operator_fee: on redemptions at B (valued at B's rate) × B's fee in basis points →
  B owes the operator;
- breakage: points of A that expired × A's issuance price × A's breakage share → the
  operator owes A (the share of what A paid for points nobody will redeem).

One line per (payer, payee, reason, rate per point, currency). A line's currency is the
one it is priced in: the payee's for redemptions and breakage, the payer's for charges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from settlement.journal_view import OPERATOR, Event, Facts
from settlement.terms import PartnerTerms

BPS = Decimal(10_000)


@dataclass(frozen=True, slots=True, order=True)
class LineKey:
    payer: str
    payee: str
    reason: str
    rate_per_point: Decimal
    currency: str


@dataclass(slots=True)
class Bucket:
    points: int = 0
    entries: int = 0
    first_seq: int = -1
    last_seq: int = -1
    terms_versions: set[tuple[str, int]] = field(default_factory=set)

    def add(self, event: Event, points: int, version: tuple[str, int]) -> None:
        self.points += points
        if event.seq != self.last_seq:  # an entry with several issuers counts once
            self.entries += 1
        self.first_seq = event.seq if self.first_seq < 0 else self.first_seq
        self.last_seq = event.seq
        self.terms_versions.add(version)


_Line = tuple[tuple[str, str, str, Decimal, str], Bucket]
_UNSEEN: Any = object()


class MissingTerms(ValueError):
    """A partner with priced activity has no terms (or currency) in force."""


@dataclass(slots=True)
class Obligations:
    """A sink for ``journal_view.read``: aggregates events into line buckets."""

    _raw: dict[tuple[str, str, str, Decimal, str], Bucket] = field(default_factory=dict)
    points_by_kind: dict[str, int] = field(default_factory=dict)
    # When set: the raw keys (both directions) of one line whose entries to list.
    trace: frozenset[tuple[str, str, str, Decimal, str]] | None = None
    traced_seqs: list[int] = field(default_factory=list)
    # A million events come through here. Which terms version priced an event fixes its
    # rates, so each (line, terms version) is resolved once to its bucket (or to None for
    # a zero rate): no Decimal arithmetic or hashing per event.
    _lines: dict[tuple[str, str, str, tuple[str, int], str], _Line | None] = field(
        default_factory=dict
    )
    _fee_rates: dict[tuple[str, int], Decimal] = field(default_factory=dict)

    def __call__(self, facts: Facts, event: Event) -> None:
        self.points_by_kind[event.kind] = self.points_by_kind.get(event.kind, 0) + event.points
        if event.kind == "redemption":
            self._redemption(facts, event)
        elif event.kind == "issuance" and event.origin != OPERATOR:
            version, terms = _terms(facts, event.origin, event)
            rate = terms.issuance_price_per_point
            self._add(
                event.origin,
                OPERATOR,
                "issuance",
                rate,
                facts,
                event.origin,
                event,
                (event.origin, version),
            )
        elif event.kind == "expiry" and event.origin != OPERATOR:
            version, terms = _terms(facts, event.origin, event)
            rate = terms.issuance_price_per_point * terms.breakage_share
            self._add(
                OPERATOR,
                event.origin,
                "breakage",
                rate,
                facts,
                event.origin,
                event,
                (event.origin, version),
            )

    def _redemption(self, facts: Facts, event: Event) -> None:
        version, terms = _terms(facts, event.party, event)
        rate = terms.redemption_rate_per_point
        fee_rate = self._fee_rates.get((event.party, version))
        if fee_rate is None:
            fee_rate = self._fee_rates[(event.party, version)] = rate * terms.operator_fee_bps / BPS
        if event.origin != event.party:
            self._add(
                event.origin,
                event.party,
                "redemption",
                rate,
                facts,
                event.party,
                event,
                (event.party, version),
            )
        self._add(
            event.party,
            OPERATOR,
            "operator_fee",
            fee_rate,
            facts,
            event.party,
            event,
            (event.party, version),
        )

    def _add(
        self,
        payer: str,
        payee: str,
        reason: str,
        rate: Decimal,
        facts: Facts,
        priced_by: str,
        event: Event,
        version: tuple[str, int],
    ) -> None:
        currency = facts.currencies.get(priced_by)
        if currency is None:
            raise MissingTerms(f"partner {priced_by} has no settlement currency")
        memo = (payer, payee, reason, version, currency)
        line = self._lines.get(memo, _UNSEEN)
        if line is _UNSEEN:
            line = self._lines[memo] = self._line(payer, payee, reason, rate, currency)
        if line is None:  # a zero rate: nothing owed
            return
        raw, bucket = line
        if self.trace is not None and raw in self.trace:
            self.traced_seqs.append(event.seq)
        bucket.add(event, event.points, version)

    def _line(
        self, payer: str, payee: str, reason: str, rate: Decimal, currency: str
    ) -> _Line | None:
        if rate == 0:
            return None
        # Tuple keys while streaming; LineKeys once, at the end. Equal Decimals hash
        # alike (0.50 and 0.5), so one rate makes one line, whichever terms set it.
        raw = (payer, payee, reason, rate, currency)
        bucket = self._raw.get(raw)
        if bucket is None:
            bucket = self._raw[raw] = Bucket()
        return raw, bucket

    @property
    def buckets(self) -> dict[LineKey, Bucket]:
        return {
            LineKey(payer, payee, reason, rate.normalize(), currency): bucket
            for (payer, payee, reason, rate, currency), bucket in self._raw.items()
        }


def _terms(facts: Facts, partner: str, event: Event) -> tuple[int, PartnerTerms]:
    found = facts.terms_at(partner, event.time_us)
    if found is None:
        raise MissingTerms(f"partner {partner} has no terms in force at entry {event.seq}")
    return found

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

    def add(self, seq: int, points: int, version: tuple[str, int]) -> None:
        self.points += points
        if seq != self.last_seq:  # an entry with several issuers counts once
            self.entries += 1
        if self.first_seq < 0:
            self.first_seq = seq
        self.last_seq = seq
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
    _redemptions: dict[tuple[str, str, int, str | None], tuple[list[_Line], tuple[str, int]]] = (
        field(default_factory=dict)
    )

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
        self.spend(facts, event.seq, event.time_us, event.party, event.origin, event.points, 0)

    def spend(
        self,
        facts: Facts,
        seq: int,
        time_us: int,
        party: str,
        origin: str,
        points: int,
        counted: int = 1,
    ) -> None:
        """A redemption event, from its fields (``journal_view.read``'s fast path for the
        commonest entry: no Event made); ``counted`` 0 when __call__ counted it."""
        if counted:
            self.points_by_kind["redemption"] = self.points_by_kind.get("redemption", 0) + points
        found = facts.terms_at(party, time_us)
        if found is None:
            raise MissingTerms(f"partner {party} has no terms in force at entry {seq}")
        version = found[0]
        memo = (party, origin, version, facts.currencies.get(party))
        resolved = self._redemptions.get(memo)
        if resolved is None:
            resolved = self._redemptions[memo] = self._redemption_lines(
                facts, party, origin, version, found[1]
            )
        # Bucket.add inlined (two lines per redemption, a million redemptions); the terms
        # version that priced them was put in each bucket when the memo was resolved.
        trace = self.trace
        for raw, bucket in resolved[0]:
            if trace is not None and raw in trace:
                self.traced_seqs.append(seq)
            bucket.points += points
            if seq != bucket.last_seq:
                bucket.entries += 1
                if bucket.first_seq < 0:
                    bucket.first_seq = seq
                bucket.last_seq = seq

    def redemption_buckets(
        self, facts: Facts, seq: int, time_us: int, party: str, origin: str
    ) -> tuple[int, int, list[Bucket]]:
        """The buckets ``spend`` adds a redemption of ``origin``'s points at ``party`` to
        at ``time_us``, and the span [from_us, until_us) of times the same terms version
        prices (``journal_view``'s streaming read keeps them while its times stay inside)."""
        self.points_by_kind.setdefault("redemption", 0)
        span = facts.terms_span(party, time_us)
        if span is None:
            raise MissingTerms(f"partner {party} has no terms in force at entry {seq}")
        from_us, until_us, version, terms = span
        memo = (party, origin, version, facts.currencies.get(party))
        resolved = self._redemptions.get(memo)
        if resolved is None:
            resolved = self._redemptions[memo] = self._redemption_lines(
                facts, party, origin, version, terms
            )
        return from_us, until_us, [bucket for _raw, bucket in resolved[0]]

    def _redemption_lines(
        self, facts: Facts, party: str, origin: str, version: int, terms: PartnerTerms
    ) -> tuple[list[_Line], tuple[str, int]]:
        """The lines (redemption, then fee) that one (where spent, issuer, terms version)
        adds to, resolved once: the rates are fixed by the version."""
        rate = terms.redemption_rate_per_point
        fee_rate = rate * terms.operator_fee_bps / BPS
        priced_by = (party, version)
        wanted = [(party, OPERATOR, "operator_fee", fee_rate)]
        if origin != party:
            wanted.insert(0, (origin, party, "redemption", rate))
        lines = []
        for payer, payee, reason, line_rate in wanted:
            currency = facts.currencies.get(party)
            if currency is None:
                raise MissingTerms(f"partner {party} has no settlement currency")
            line = self._lines.get((payer, payee, reason, priced_by, currency), _UNSEEN)
            if line is _UNSEEN:
                line = self._lines[(payer, payee, reason, priced_by, currency)] = self._line(
                    payer, payee, reason, line_rate, currency
                )
            if line is not None:
                line[1].terms_versions.add(priced_by)
                lines.append(line)
        return lines, priced_by

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
        bucket.add(event.seq, event.points, version)

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

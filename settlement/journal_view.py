"""What settlement reads from the journal, and nothing else.

Settlement sees the journal as a stream of canonical entries (from the database or from
an export: the same bytes, so the same result). From every entry before the cut it keeps
what pricing needs — lot origins, partners' settlement currencies, their terms versions,
bank accounts and exchange rates recorded for runs — and from the entries of the period
it yields the priced events: points redeemed (by issuer and by where they were spent),
points issued, clawed back and expired.

The facts it reads (kinds and metadata fields) are a contract with whoever writes them:
``partner_onboarded`` {partner, settlement_currency}; ``partner_terms`` {partner, version,
effective_from, terms}; ``partner_bank_account`` {partner, iban, bic, name};
``fx_rate`` {run, base, quote, rate}; ``earn``/``bonus`` {partner, points};
``redeem``/``capture``/``refund_redemption`` {partner} with the member posting's lots;
``refund_earn`` with credits to ``…:issued`` accounts; ``expire`` with its expired lots;
``settlement_approved`` / ``settlement_paid`` {run}.

Which terms price an entry (docs/SETTLEMENT.md §4): among **all** versions recorded
before the run's cut, the one with the latest ``effective_from`` not after the entry's
time (ties: the higher version). A version published late but back-dated therefore
prices every entry of its range, those recorded before it included — which needs the
versions before the entries, so they are read first (``read_terms``: a byte search
over the stream, or a query by kind from the database).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import compress, repeat
from operator import contains
from typing import Any, NamedTuple

import orjson

from ledger.timefmt import minute_us_cached, parse_time_us
from settlement.money import parse_rate
from settlement.terms import PartnerTerms

OPERATOR = "coalition"


class Event(NamedTuple):
    """One priced movement of points within the period (a tuple: a period makes millions)."""

    seq: int
    time_us: int  # the terms in force at this time price it (a reversal: the original's)
    kind: str  # redemption | issuance | expiry
    party: str  # redemption: where spent; issuance and expiry: the issuer
    origin: str  # the issuer of the points
    points: int  # negative for reversals (refunded redemptions, clawbacks)


TERMS_KIND = "partner_terms"
_TERMS_MARK = b'"partner_terms"'
TermsTable = dict[str, list[tuple[int, int, PartnerTerms]]]


@dataclass(slots=True)
class Facts:
    currencies: dict[str, str] = field(default_factory=dict)
    legal_names: dict[str, str] = field(default_factory=dict)  # the last before the cut
    terms: dict[str, list[tuple[int, int, PartnerTerms]]] = field(default_factory=dict)
    bank_accounts: dict[str, dict[str, str]] = field(default_factory=dict)
    fx_rates: dict[tuple[str, str, str], Decimal] = field(default_factory=dict)
    settled_runs: dict[str, str] = field(default_factory=dict)  # run id -> last status
    lot_origins: dict[str, str] = field(default_factory=dict)
    # Every entry's time by seq (8 bytes each), to price a reversal as its original was.
    entry_times_us: array[int] = field(default_factory=lambda: array("q"))

    def terms_at(self, partner: str, time_us: int) -> tuple[int, PartnerTerms] | None:
        """The version in force at ``time_us``: the latest (effective_from, version) not
        after it, among every version recorded before the cut."""
        # Versions are sorted by (effective_from, version) (read_terms): the last one
        # in force is the answer.
        for effective_us, version, terms in reversed(self.terms.get(partner, ())):
            if effective_us <= time_us:
                return version, terms
        return None

    def terms_span(self, partner: str, time_us: int) -> tuple[int, int, int, PartnerTerms] | None:
        """``terms_at``'s answer with the span [from_us, until_us) of times it holds for:
        from its ``effective_from`` to the next version's (none after it: unbounded)."""
        until_us = _UNBOUNDED_US
        for effective_us, version, terms in reversed(self.terms.get(partner, ())):
            if effective_us <= time_us:
                return effective_us, until_us, version, terms
            until_us = effective_us
        return None


_UNBOUNDED_US = 1 << 63  # after every instant the format can hold
# Obligations.spend(facts, seq, time_us, party, origin, points): a redemption event's fields.
Spend = Callable[[Facts, int, int, str, str, int], None]
# Obligations.redemption_buckets(facts, seq, time_us, party, origin): the buckets such a
# redemption adds to, and the span of times [from_us, until_us) the same terms price.
Resolve = Callable[[Facts, int, int, str, str], tuple[int, int, list[Any]]]


def read_terms(terms_entries: Iterable[bytes], cut_size: int) -> TermsTable:
    """Every terms version recorded before the cut, from canonical entries (any subset
    of the journal that holds all its ``partner_terms`` entries: the rest is skipped
    by a byte search before anything is parsed)."""
    table: TermsTable = {}
    # The byte search runs over every entry of a journal given whole: map and compress
    # keep it out of the interpreter's loop.
    entries = list(terms_entries) if not isinstance(terms_entries, Sequence) else terms_entries
    marked = compress(entries, map(contains, entries, repeat(_TERMS_MARK)))
    for canonical in marked:
        entry = orjson.loads(canonical)
        if entry["kind"] != TERMS_KIND or entry["seq"] >= cut_size:
            continue
        meta = entry["meta"]
        table.setdefault(meta["partner"], []).append(
            (
                parse_time_us(meta["effective_from"]),
                int(meta["version"]),
                PartnerTerms.from_json(meta["terms"]),
            )
        )
    for versions in table.values():
        versions.sort(key=lambda v: (v[0], v[1]))
    return table


def read(
    entries: Iterable[bytes],
    start_seq: int,
    end_seq: int,
    sink: Callable[[Facts, Event], None],
    *,
    cut_size: int | None = None,
    terms: TermsTable | None = None,
) -> Facts:
    """Stream canonical entries 0 … cut_size−1 (default end_seq), handing each event of
    start_seq … end_seq−1 on to ``sink`` as it comes: nothing is held per entry. Facts
    (currencies, bank accounts, rates) are read up to the cut; ``terms`` are every
    version before the cut (``read_terms``), known before the first event is priced."""
    cut = end_seq if cut_size is None else cut_size
    assert end_seq <= cut, "the period's entries end at or before the cut"
    facts = Facts(terms={} if terms is None else terms)
    resolve: Resolve | None = getattr(sink, "redemption_buckets", None)
    if resolve is not None and getattr(sink, "trace", None) is None:
        _read_spends(facts, entries, start_seq, end_seq, cut, sink, resolve)
    else:
        _read_each(facts, entries, start_seq, end_seq, cut, sink)
    return facts


def _read_each(
    facts: Facts,
    entries: Iterable[bytes],
    start_seq: int,
    end_seq: int,
    cut: int,
    sink: Callable[[Facts, Event], None],
) -> None:
    """Every entry parsed and handled on its own (the reference the tests hold
    ``_read_spends`` to; also the path of a trace, ``run.entries_behind``)."""
    # A million entries come through this loop: parsing is inlined (a generator per
    # stage cost more than its work), and a spend that opens no lot skips _remember.
    times_us = facts.entry_times_us
    loads = orjson.loads
    spend: Spend | None = getattr(sink, "spend", None)
    seq = 0
    for canonical in entries:
        if seq >= cut:
            break
        entry = loads(canonical)  # the journal verified these bytes when it wrote them
        assert entry["seq"] == seq, "entries must come in order, without gaps"
        text = entry["time"]
        minute_us = minute_us_cached(text[:16])
        if minute_us is None or len(text) != 27 or text[16] != ":" or text[17] > "5":
            times_us.append(parse_time_us(text))  # strict: raises on a malformed time
        else:  # the minute from the clock's bounded cache, the rest by position
            times_us.append(minute_us + int(text[17:19]) * 1_000_000 + int(text[20:26]))
        kind = entry["kind"]
        if kind not in _SPENDS or _OPENS_LOT in canonical:
            _remember(facts, seq, kind, entry)
        if start_seq <= seq < end_seq and (
            spend is None or kind not in _SPENDS or not _spent_one_lot(facts, seq, entry, spend)
        ):
            for event in _events(facts, seq, kind, entry):
                sink(facts, event)
        seq += 1
    assert seq == cut, f"the journal holds {seq} entries, the cut is {cut}"


def _read_spends(
    facts: Facts,
    entries: Iterable[bytes],
    start_seq: int,
    end_seq: int,
    cut: int,
    sink: Any,
    resolve: Resolve,
) -> None:
    """What ``_read_each`` does, with the commonest entry — a spend from one lot, opening
    none — taken straight to its buckets: which buckets a (where spent, issuer) adds to
    is resolved once per terms version (``resolve`` also returns the span of times that
    version prices, and times never go backwards along the chain), so a spend costs a
    parse, two lookups and two additions. Every other entry goes the way
    ``_read_each`` takes it."""
    times_us = facts.entry_times_us
    append_time = times_us.append
    lot_origins = facts.lot_origins
    loads = orjson.loads
    spend: Spend = sink.spend
    resolved: dict[tuple[str, str], tuple[int, int, list[Any]]] = {}
    redeemed_points = 0
    last_prefix = ""
    minute_us: int | None = None
    seq = 0
    for canonical in entries:
        if seq >= cut:
            break
        entry = loads(canonical)  # the journal verified these bytes when it wrote them
        assert entry["seq"] == seq, "entries must come in order, without gaps"
        text = entry["time"]
        prefix = text[:16]
        if prefix != last_prefix:  # consecutive entries mostly share their minute
            minute_us = minute_us_cached(prefix)
            last_prefix = prefix
        if minute_us is None or len(text) != 27 or text[16] != ":" or text[17] > "5":
            time_us = parse_time_us(text)  # strict: raises on a malformed time
        else:  # the minute from the clock's bounded cache, the rest by position
            time_us = minute_us + int(text[17:19]) * 1_000_000 + int(text[20:26])
        append_time(time_us)
        kind = entry["kind"]
        if kind in _SPENDS:
            postings = entry["postings"]
            if len(postings) == 2:
                first, second = postings
                lots = first.get("lots")
                if (
                    lots is not None
                    and len(lots) == 1
                    and first["amount"] < 0
                    and "lots" not in second
                    and "lot" not in first  # opens no lot: nothing to remember
                    and "lot" not in second
                ):
                    take = lots[0]
                    points = take["amount"]
                    if points and start_seq <= seq < end_seq:
                        party = entry["meta"]["partner"]
                        origin = lot_origins[take["lot"]]
                        found = resolved.get((party, origin))
                        if found is None or not found[0] <= time_us < found[1]:
                            found = resolve(facts, seq, time_us, party, origin)
                            resolved[(party, origin)] = found
                        redeemed_points += points
                        for bucket in found[2]:  # Obligations.spend's additions
                            bucket.points += points
                            if seq != bucket.last_seq:
                                bucket.entries += 1
                                if bucket.first_seq < 0:
                                    bucket.first_seq = seq
                                bucket.last_seq = seq
                    seq += 1
                    continue
        # A spend that opens no lot remembers nothing: _read_each skips it by its bytes.
        _remember(facts, seq, kind, entry)
        if kind == "partner_onboarded":
            resolved.clear()  # a currency may have changed: the lines it prices in
        if start_seq <= seq < end_seq and (
            kind not in _SPENDS or not _spent_one_lot(facts, seq, entry, spend)
        ):
            for event in _events(facts, seq, kind, entry):
                sink(facts, event)
        seq += 1
    assert seq == cut, f"the journal holds {seq} entries, the cut is {cut}"
    if redeemed_points:
        sink.points_by_kind["redemption"] += redeemed_points


# Kinds that record no fact; canonical bytes hold no spaces, so a posting opening a lot
# always shows this mark (a false positive only costs the slow path).
_SPENDS = frozenset(("redeem", "capture"))

_OPENS_LOT = b'"lot":{'


def _spent_one_lot(facts: Facts, seq: int, entry: dict[str, Any], spend: Spend) -> bool:
    """The commonest entry, a spend from one lot, handed on without an Event; False for
    any other shape (the general path then handles it)."""
    postings = entry["postings"]
    if len(postings) != 2 or "lots" in postings[1]:
        return False
    first = postings[0]
    lots = first.get("lots")
    if lots is None or len(lots) != 1 or first["amount"] >= 0:
        return False
    take = lots[0]
    if take["amount"]:
        origin = facts.lot_origins[take["lot"]]
        spend(
            facts, seq, facts.entry_times_us[seq], entry["meta"]["partner"], origin, take["amount"]
        )
    return True


def _remember(facts: Facts, seq: int, kind: str, entry: dict[str, Any]) -> None:
    for index, posting in enumerate(entry["postings"]):
        if "lot" in posting and posting["lot"]["amount"]:
            facts.lot_origins[f"{seq}:{index}"] = posting["lot"]["origin"]
    meta = entry["meta"]
    if kind == "partner_onboarded":
        facts.currencies[meta["partner"]] = meta["settlement_currency"]
        if meta.get("legal_name"):
            facts.legal_names[str(meta["partner"])] = str(meta["legal_name"])
    elif kind == "partner_bank_account":
        facts.bank_accounts[meta["partner"]] = {k: str(meta[k]) for k in ("iban", "bic", "name")}
    elif kind == "fx_rate":
        facts.fx_rates[(meta["run"], meta["base"], meta["quote"])] = parse_rate(
            meta["rate"], "rate"
        )
    elif kind in ("settlement_approved", "settlement_paid"):
        facts.settled_runs[meta["run"]] = kind.removeprefix("settlement_")


def _events(facts: Facts, seq: int, kind: str, entry: dict[str, Any]) -> Iterator[Event]:
    meta = entry["meta"]
    time_us = facts.entry_times_us[seq]
    corrects = entry.get("corrects")
    if kind in ("refund_redemption", "refund_earn") and isinstance(corrects, int):
        time_us = facts.entry_times_us[corrects]  # priced at the terms the original had
    if kind in ("redeem", "capture", "refund_redemption"):
        for origin, points in _lot_points(facts, entry).items():
            yield Event(seq, time_us, "redemption", meta["partner"], origin, points)
    elif kind in ("earn", "bonus") and meta.get("points"):
        yield Event(seq, time_us, "issuance", meta["partner"], meta["partner"], meta["points"])
    elif kind == "refund_earn":
        for posting in entry["postings"]:
            issuer = issuer_of(posting["account"])
            if issuer is not None and posting["amount"] > 0:
                yield Event(seq, time_us, "issuance", issuer, issuer, -posting["amount"])
    elif kind == "expire":
        for origin, points in _lot_points(facts, entry).items():
            yield Event(seq, time_us, "expiry", origin, origin, points)


def _lot_points(facts: Facts, entry: dict[str, Any]) -> dict[str, int]:
    """Points per issuer that the entry took from (or, on a credit, gave back to) lots."""
    postings = entry["postings"]
    if len(postings) == 2 and "lots" not in postings[1]:
        lots = postings[0].get("lots")
        if lots is not None and len(lots) == 1:  # the common spend: one lot
            take = lots[0]
            points = take["amount"] if postings[0]["amount"] < 0 else -take["amount"]
            return {facts.lot_origins[take["lot"]]: points} if points else {}
    by_origin: dict[str, int] = {}
    for posting in postings:
        sign = 1 if posting["amount"] < 0 else -1
        for take in posting.get("lots", ()):
            origin = facts.lot_origins[take["lot"]]
            by_origin[origin] = by_origin.get(origin, 0) + sign * take["amount"]
    if len(by_origin) == 1:  # most spends take from one issuer's lots
        [(origin, points)] = by_origin.items()
        return {origin: points} if points else {}
    return {origin: points for origin, points in sorted(by_origin.items()) if points}


def issuer_of(account: str) -> str | None:
    if account == f"{OPERATOR}:issued":
        return OPERATOR
    parts = account.split(":")
    if len(parts) == 3 and parts[0] == "partner" and parts[2] == "issued":
        return parts[1]
    return None

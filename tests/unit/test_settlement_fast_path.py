"""journal_view.read hands the commonest entry (a spend from one lot) to
``Obligations.spend`` without making an Event; every other shape goes through the
general path. Both must aggregate the same buckets: checked on generated activity
(spends from one lot and from several issuers' lots, captures, refunds, clawbacks,
expiry) by reading it once with the fast path and once without."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from settlement import journal_view
from settlement.journal_view import Event, Facts
from settlement.obligations import Obligations
from settlement.terms import PartnerTerms
from tests.unit._memory_journal import DAY_US, JAN_1_US, CoalitionWriter, MemoryJournal

PARTNERS = ("air", "shop", "cafe")


class GeneralOnly:
    """The same sink without ``spend``: read() must then make an Event of every spend."""

    def __init__(self) -> None:
        self.inner = Obligations()

    def __call__(self, facts: Facts, event: Event) -> None:
        self.inner(facts, event)


def _terms(rate: str) -> PartnerTerms:
    return PartnerTerms(
        Decimal("0.5"), Decimal(rate), 150, Decimal("0.5"), "monthly", "multilateral"
    )


def _read(entries: list[bytes], sink: Any) -> None:
    terms = journal_view.read_terms(entries, len(entries))
    journal_view.read(iter(entries), 0, len(entries), sink, terms=terms)


actions = st.lists(
    st.tuples(
        st.sampled_from(["earn", "redeem", "hold", "refund", "clawback", "later"]),
        st.integers(0, 2),  # partner
        st.integers(0, 3),  # member
        st.integers(1, 400),  # points or minor units
    ),
    min_size=5,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(actions)
def test_the_fast_path_aggregates_what_the_general_path_does(plan: list[Any]) -> None:
    j = MemoryJournal(JAN_1_US - DAY_US)
    w = CoalitionWriter(j)
    for partner, rate in zip(PARTNERS, ("0.8", "0.7", "1.3"), strict=True):
        w.onboard(partner, "EUR")
        w.publish_terms(partner, _terms(rate), 0)
    members = [f"m{n}" for n in range(4)]
    for member in members:
        w.enroll(member)
    now, earns, spends = JAN_1_US, [], []
    for action, p, m, amount in plan:
        partner, member = PARTNERS[p], members[m]
        now += 60_000_000
        w.at(now)
        if action == "earn":
            earns.append(w.earn(partner, member, amount, purchase_minor=amount * 100))
        elif action == "redeem" and min(amount, w.available(member)) > 0:
            spends.append(w.redeem(partner, member, min(amount, w.available(member))))
        elif action == "hold" and min(amount, w.available(member)) > 0:
            hold = w.authorise(partner, member, min(amount, w.available(member)))
            w.capture(hold, max(1, min(amount, w.available(member) + 1) // 2))
        elif action == "refund" and spends:
            w.refund_redemption(spends.pop(0), 1)
        elif action == "clawback" and earns:
            w.refund_purchase(earns.pop(0), 100)
        elif action == "later":  # a back-dated version prices from the period's start
            w.publish_terms(partner, _terms("0.9"), JAN_1_US)
    w.at(now + 400 * DAY_US)
    w.expire(now + 400 * DAY_US)
    fast, general = Obligations(), GeneralOnly()
    _read(j.entries, fast)
    _read(j.entries, general)
    assert fast.buckets == general.inner.buckets
    assert fast.points_by_kind == general.inner.points_by_kind


class Reference(Obligations):
    """Obligations read the way the code before the resolved spans did (``_read_each``:
    a trace, even an empty one, takes that path)."""

    def __init__(self) -> None:
        super().__init__(trace=frozenset())


def _facts(entries: list[bytes], sink: Any, start_seq: int) -> Facts:
    terms = journal_view.read_terms(entries, len(entries))
    return journal_view.read(iter(entries), start_seq, len(entries), sink, terms=terms)


@settings(max_examples=60, deadline=None)
@given(actions, st.integers(0, 30), st.booleans())
def test_the_streaming_read_equals_the_reference_read(
    plan: list[Any], start_offset: int, late_partner: bool
) -> None:
    """Three currencies, refunds of redemptions (corrections), clawbacks, back-dated
    terms, expiry, a period starting after some of the activity and a partner onboarded
    mid-stream: the facts and buckets of ``_read_spends`` are those of
    ``_read_each`` (the reference), so the run computed from them is the same."""
    j = MemoryJournal(JAN_1_US - DAY_US)
    w = CoalitionWriter(j)
    for partner, rate, currency in zip(
        PARTNERS, ("0.8", "0.7", "1.3"), ("EUR", "GBP", "JPY"), strict=True
    ):
        w.onboard(partner, currency)
        w.publish_terms(partner, _terms(rate), 0)
    members = [f"m{n}" for n in range(4)]
    for member in members:
        w.enroll(member)
    now, earns, spends = JAN_1_US, [], []
    for number, (action, p, m, amount) in enumerate(plan):
        partner, member = PARTNERS[p], members[m]
        now += 60_000_000
        w.at(now)
        if late_partner and number == len(plan) // 2:
            w.onboard("late", "EUR")  # an onboarding mid-stream drops the resolved lines
        if action == "earn":
            earns.append(w.earn(partner, member, amount, purchase_minor=amount * 100))
        elif action == "redeem" and min(amount, w.available(member)) > 0:
            spends.append(w.redeem(partner, member, min(amount, w.available(member))))
        elif action == "hold" and min(amount, w.available(member)) > 0:
            hold = w.authorise(partner, member, min(amount, w.available(member)))
            w.capture(hold, max(1, min(amount, w.available(member) + 1) // 2))
        elif action == "refund" and spends:
            w.refund_redemption(spends.pop(0), 1)
        elif action == "clawback" and earns:
            w.refund_purchase(earns.pop(0), 100)
        elif action == "later":
            w.publish_terms(partner, _terms("0.9"), JAN_1_US)
    w.at(now + 400 * DAY_US)
    w.expire(now + 400 * DAY_US)
    start_seq = min(start_offset, j.size)
    fast, reference = Obligations(), Reference()
    fast_facts = _facts(j.entries, fast, start_seq)
    reference_facts = _facts(j.entries, reference, start_seq)
    assert fast_facts == reference_facts
    assert fast.buckets == reference.buckets
    assert fast.points_by_kind == reference.points_by_kind

"""Random sequences of coalition operations against PostgreSQL, through the service functions.

A state machine earns, gives bonuses, redeems (often more than the member may spend),
authorises, captures and voids, refunds purchases (whole, in parts, after the points were
spent) and redemptions, retries all of these, lets days pass under a one-month expiry
policy and runs the expiry job. Every answer, refusal code included, is predicted by a
small model of the members' lots written here, apart from the coalition code. After every
step the database must agree with the model and with the identities the bookkeeping
promises: (1) a member's balance is its lots less its debt, (2) each issuer's issuance is
accounted for (see ``_check_issuers``), (3) every unit sums to zero; (4) a purchase
refunded in full mints nothing; (5) the online verifier accepts the journal.

The model expects what the modules promise, not what the code happens to do: the expiry
job moves every point past its expiry to breakage, whatever the member owes or holds. The
tests at the end pin down, each on its own, the expiry cases the machine found.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from coalition import accounts, reports
from coalition.context import Coalition, refusal_for
from coalition.earn import bonus_points, earn_points
from coalition.earning import EarningRules
from coalition.expiry import expire_points
from coalition.members import enroll_member
from coalition.outcomes import (
    Authorised,
    Earned,
    Expired,
    Redeemed,
    Refunded,
    Refusal,
    RefusalCode,
    Voided,
)
from coalition.partners import (
    onboard_partner,
    publish_earning_rules,
    publish_terms,
    set_expiry_policy,
)
from coalition.policy import add_months_us
from coalition.redeem import authorise, capture, redeem_points, void
from coalition.refunds import refund_purchase, refund_redemption
from ledger import reads
from ledger.group_commit import GroupCommitter
from ledger.journal import Appended
from ledger.rejections import Rejection
from ledger.requests import EntryRequest
from ledger.verify_db import verify_database
from settlement.terms import PartnerTerms

MINUTE_US = 60_000_000
DAY_US = 86_400_000_000
T0_US = 1_800_000_000_000_000  # 2027-01-15T08:00:00Z
PARTNERS = ("grocer", "fuel", "airline")
ISSUERS = (*PARTNERS, accounts.OPERATOR)
MEMBERS = ("M1", "M2", "M3")
EXPIRY_MONTHS = 1  # short, so that many lots expire within a run
STEP_MINOR = 10_000  # 1 point per 100 RUB
CATEGORY_MULTIPLIERS = {"alcohol": 0, "fresh": 2}
TERMS = PartnerTerms(
    Decimal("0.01"), Decimal("0.008"), 50, Decimal("0.5"), "monthly", "multilateral"
)
RULES = EarningRules(
    "RUB", 1, STEP_MINOR, {name: Decimal(m) for name, m in CATEGORY_MULTIPLIERS.items()}
)
HOW_MUCH = ("full", "part")
RACERS = ("refund_purchase", "refund_redemption", "redeem", "capture")
HOLD_SECONDS = (60, 15 * 60, 2 * 24 * 3600, 7 * 24 * 3600)
THOROUGH_EVERY_STEPS = 10


# -- the model ---------------------------------------------------------------------------


@dataclass
class ModelLot:
    lot_id: str
    origin: str
    expires_us: int
    opened_seq: int
    opened: int
    remaining: int

    def expired(self, now_us: int) -> bool:
        return self.expires_us <= now_us

    def fefo_key(self) -> tuple[int, int]:
        return (self.expires_us, self.opened_seq)  # every earn's lot is posting 1


@dataclass
class ModelHold:
    seq: int
    partner: str
    member: str
    points: int
    expires_us: int
    status: str = "active"


@dataclass
class ModelEarn:
    ref: str
    partner: str  # the issuer; coalition_earn also holds bonuses (no purchase)
    member: str
    seq: int
    purchase_minor: int
    category: str | None
    points: int
    refunded_minor: int = 0
    clawed_back: int = 0


@dataclass
class ModelRedemption:
    ref: str
    partner: str
    member: str
    seq: int
    points: int
    takes: list[tuple[str, int]]  # in the order the ledger took them
    refunded: int = 0


@dataclass
class Model:
    """What the coalition should have done, kept apart from its code."""

    size: int
    now_us: int = T0_US
    balances: Counter[str] = field(default_factory=Counter)
    lots: dict[str, list[ModelLot]] = field(default_factory=dict)
    debt: Counter[str] = field(default_factory=Counter)
    holds: dict[int, ModelHold] = field(default_factory=dict)
    earns: list[ModelEarn] = field(default_factory=list)
    redemptions: list[ModelRedemption] = field(default_factory=list)
    # Per issuer (lot origin): what happened to the points it issued.
    redeemed_from: Counter[str] = field(default_factory=Counter)  # net of redemption refunds
    expired_from: Counter[str] = field(default_factory=Counter)
    debt_created_by: Counter[str] = field(default_factory=Counter)  # by its purchase refunds
    debt_repaid_by: Counter[str] = field(default_factory=Counter)  # by its earns

    def lot(self, lot_id: str) -> ModelLot:
        return next(lot for lots in self.lots.values() for lot in lots if lot.lot_id == lot_id)

    def held(self, member: str) -> int:
        return sum(
            h.points
            for h in self.holds.values()
            if h.member == member and h.status == "active" and h.expires_us > self.now_us
        )

    def unexpired(self, member: str) -> int:
        return sum(lot.remaining for lot in self.lots[member] if not lot.expired(self.now_us))

    def remaining(self, member: str) -> int:
        return sum(lot.remaining for lot in self.lots[member])

    def spendable(self, member: str) -> int:
        """What a debit or a hold may take now: unexpired lots and balance, less holds."""
        balance = self.balances[accounts.member(member)]
        return min(balance, self.unexpired(member)) - self.held(member)

    def shortfall(self, member: str, points: int) -> RefusalCode:
        # The coalition says "expired" when unexpired lots fall short but all lots would do.
        if self.unexpired(member) < points <= self.remaining(member):
            return RefusalCode.POINTS_EXPIRED
        return RefusalCode.INSUFFICIENT_POINTS

    # -- movements (each one appended entry) ---------------------------------------------

    def earn(self, issuer: str, member: str, points: int, seq: int) -> None:
        assert seq == self.size, (seq, self.size)
        self.size += 1
        if points == 0:
            return
        self.balances[accounts.issued(issuer)] -= points
        self.balances[accounts.member(member)] += points
        repaid = min(points, self.debt[member])  # a debt is repaid before a lot opens
        self.debt[member] -= repaid
        self.debt_repaid_by[issuer] += repaid
        if points > repaid:
            expires_us = add_months_us(self.now_us, EXPIRY_MONTHS)
            opened = points - repaid
            self.lots[member].append(ModelLot(f"{seq}:1", issuer, expires_us, seq, opened, opened))

    def take_fefo(self, member: str, points: int) -> list[tuple[str, int]]:
        takes = []
        wanted = points
        for lot in sorted(self.lots[member], key=ModelLot.fefo_key):
            if wanted == 0:
                break
            if lot.remaining == 0 or lot.expired(self.now_us):
                continue
            take = min(lot.remaining, wanted)
            lot.remaining -= take
            takes.append((lot.lot_id, take))
            wanted -= take
        assert wanted == 0, "the model spends only what the member may spend"
        return takes

    def spend(self, partner: str, member: str, points: int, seq: int) -> list[tuple[str, int]]:
        assert seq == self.size, (seq, self.size)
        self.size += 1
        takes = self.take_fefo(member, points)
        for lot_id, take in takes:
            self.redeemed_from[self.lot(lot_id).origin] += take
        self.balances[accounts.member(member)] -= points
        self.balances[accounts.redeemed(partner)] += points
        return takes

    def claw_back(self, earn: ModelEarn, points: int) -> int:
        """Take ``points`` from the earn's own lot, then other unexpired lots FEFO; the
        rest becomes the member's debt, returned to the refunding partner. The debt."""
        self.size += 1
        if points == 0:
            return 0
        usable = [
            lot
            for lot in self.lots[earn.member]
            if lot.remaining > 0 and not lot.expired(self.now_us)
        ]
        own = [lot for lot in usable if lot.opened_seq == earn.seq]
        others = sorted(
            (lot for lot in usable if lot.opened_seq != earn.seq), key=ModelLot.fefo_key
        )
        wanted = points
        for lot in own + others:
            take = min(lot.remaining, wanted)
            lot.remaining -= take
            self.balances[accounts.issued(lot.origin)] += take
            wanted -= take
        self.balances[accounts.issued(earn.partner)] += wanted
        self.balances[accounts.member(earn.member)] -= points
        self.debt[earn.member] += wanted
        self.debt_created_by[earn.partner] += wanted
        return wanted

    def give_back(self, redemption: ModelRedemption, points: int) -> None:
        """Restore the lots the redemption took, last-taken first, past earlier refunds."""
        self.size += 1
        skip, wanted = redemption.refunded, points
        for lot_id, amount in reversed(redemption.takes):
            passed = min(skip, amount)
            skip -= passed
            give = min(amount - passed, wanted)
            if give:
                lot = self.lot(lot_id)
                lot.remaining += give
                self.redeemed_from[lot.origin] -= give
                wanted -= give
        assert wanted == 0
        redemption.refunded += points
        self.balances[accounts.redeemed(redemption.partner)] -= points
        self.balances[accounts.member(redemption.member)] += points

    def expire(self, as_of_us: int) -> Expired:
        """Every lot expired by ``as_of_us`` goes to breakage, one entry per member."""
        entries = points = 0
        by_issuer: Counter[str] = Counter()
        for member in sorted(self.lots):
            lots = [
                lot for lot in self.lots[member] if lot.remaining > 0 and lot.expires_us <= as_of_us
            ]
            if not lots:
                continue
            total = sum(lot.remaining for lot in lots)
            for lot in lots:
                by_issuer[lot.origin] += lot.remaining
                self.expired_from[lot.origin] += lot.remaining
                lot.remaining = 0
            self.balances[accounts.member(member)] -= total
            self.balances[accounts.BREAKAGE] += total
            self.size += 1
            entries += 1
            points += total
        return Expired(entries, points, dict(by_issuer))


@dataclass(frozen=True)
class Call:
    """A call that succeeded, to send again: with the same input it must get the first
    answer (replayed) and write nothing; with ``changed`` one more, it reuses a reference
    for another request and must be refused."""

    function: Callable[..., Any]
    kwargs: dict[str, Any]
    answer: Any
    changed: str | None


def points_for(purchase_minor: int, category: str | None) -> int:
    multiplier = CATEGORY_MULTIPLIERS.get(category, 1) if category is not None else 1
    return purchase_minor * multiplier // STEP_MINOR


# -- the machine -------------------------------------------------------------------------

amounts_minor = st.one_of(
    st.integers(1, 3 * STEP_MINOR),  # too small for a point, or just one or two
    st.integers(STEP_MINOR, 400 * STEP_MINOR),
    st.integers(STEP_MINOR, 400 * STEP_MINOR),
)
categories = st.sampled_from((None, None, None, "fresh", "alcohol", "books"))
members = st.sampled_from(MEMBERS)
partners = st.sampled_from(PARTNERS)
Purchase = tuple[str, str, int, str | None]  # partner, member, amount (minor), category
spenders = st.sampled_from((*MEMBERS, None))  # None: whoever has the most to spend
purchases = st.tuples(partners, members, amounts_minor, categories)
big_purchases = st.tuples(partners, members, st.integers(STEP_MINOR, 400 * STEP_MINOR), categories)
# Of what the member may spend now; above 100 must be refused.
percents = st.integers(1, 150)


class CoalitionMachine(RuleBasedStateMachine):
    server_url: ClassVar[str]
    template_name: ClassVar[str]
    dropper: ClassVar[ThreadPoolExecutor]  # drops spent databases while the next runs

    def __init__(self) -> None:
        super().__init__()
        self.database = f"prop_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.server_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.database}" TEMPLATE "{self.template_name}"')
        self.conn = psycopg.connect(_with_database(self.server_url, self.database), autocommit=True)
        self.model = Model(size=0)
        self.co = Coalition(clock_us=lambda: self.model.now_us)
        self.refs = 0
        self.steps = 0
        self.calls: list[Call] = []

    def teardown(self) -> None:
        try:
            if sys.exc_info()[0] is None and self.model.lots:
                self._check_thoroughly()  # (5) the whole journal replays
        finally:
            self.conn.close()
            self.dropper.submit(_drop_database, self.server_url, self.database)

    def _ref(self, prefix: str) -> str:
        self.refs += 1
        return f"{prefix}-{self.refs}"

    def _call(self, function: Callable[..., Any], changed: str | None, **kwargs: Any) -> Any:
        answer = function(self.co, self.conn, **kwargs)
        if not isinstance(answer, Refusal):
            self.calls.append(Call(function, kwargs, answer, changed))
        return answer

    # -- setup -------------------------------------------------------------------------

    @initialize(first_purchases=st.lists(big_purchases, min_size=3, max_size=8))
    def set_up_the_coalition(self, first_purchases: list[Purchase]) -> None:
        set_up_coalition(self.co, self.conn, self.model.now_us)
        self.model.lots = {member: [] for member in MEMBERS}
        self.model.size = reads.head(self.conn).tree_size
        for purchase in first_purchases:
            self._earn(*purchase)

    # -- earning -----------------------------------------------------------------------

    @rule(purchases=st.lists(purchases, min_size=1, max_size=4))
    def earn(self, purchases: list[Purchase]) -> None:
        # Several per step: spending, holds and refunds need points to work on.
        for purchase in purchases:
            self._earn(*purchase)

    def _earn(
        self, partner: str, member: str, purchase_minor: int, category: str | None
    ) -> ModelEarn:
        ref = self._ref("earn")
        earned = self._call(
            earn_points,
            "purchase_minor",
            partner_id=partner,
            ref_key=ref,
            purchase_minor=purchase_minor,
            currency="RUB",
            member_id=member,
            category=category,
        )
        points = points_for(purchase_minor, category)
        assert isinstance(earned, Earned), earned
        assert (earned.points, earned.replayed) == (points, False)
        self.model.earn(partner, member, points, earned.seq)
        record = ModelEarn(ref, partner, member, earned.seq, purchase_minor, category, points)
        self.model.earns.append(record)
        return record

    @rule(issuer=st.sampled_from(ISSUERS), member=members, points=st.integers(1, 300))
    def bonus(self, issuer: str, member: str, points: int) -> None:
        ref = self._ref("bonus")
        earned = self._call(
            bonus_points,
            "points",
            issuer=issuer,
            member_id=member,
            points=points,
            reason="goodwill",
            ref_key=ref,
        )
        assert isinstance(earned, Earned) and (earned.points, earned.replayed) == (points, False)
        self.model.earn(issuer, member, points, earned.seq)
        self.model.earns.append(ModelEarn(ref, issuer, member, earned.seq, 0, None, points))

    @rule(pick=st.integers(0, 10**6), change=st.booleans())
    def retry(self, pick: int, change: bool) -> None:
        """A till's retry gets the first answer, even when today it would be refused."""
        if not (self.calls):
            return  # a no-op step: what is drawn never depends on races' outcomes
        call = self.calls[pick % len(self.calls)]
        if change and call.changed is not None:
            kwargs = {**call.kwargs, call.changed: call.kwargs[call.changed] + 1}
            refused(call.function(self.co, self.conn, **kwargs), RefusalCode.DUPLICATE_REFERENCE)
        else:
            again = call.function(self.co, self.conn, **call.kwargs)
            assert again == dataclasses.replace(call.answer, replayed=True)

    # -- spending ----------------------------------------------------------------------

    def _spender(self, member: str | None) -> str:
        """The member named, or (None) the one with the most to spend right now."""
        if member is not None:
            return member
        return max(MEMBERS, key=self.model.spendable)

    def _points(self, member: str, percent: int) -> int:
        spendable = self.model.spendable(member)
        if spendable <= 0:
            return 1 + percent % 50
        return max(1, spendable * percent // 100)

    @rule(partner=partners, member=spenders, percent=percents)
    def redeem(self, partner: str, member: str | None, percent: int) -> None:
        member = self._spender(member)
        points = self._points(member, percent)
        ref = self._ref("redeem")
        outcome = self._call(
            redeem_points,
            "points",
            partner_id=partner,
            ref_key=ref,
            points=points,
            member_id=member,
        )
        if points > self.model.spendable(member):
            refused(outcome, self.model.shortfall(member, points))
            return
        assert isinstance(outcome, Redeemed), outcome
        self._record_spend(outcome, partner, member, points, ref)

    def _record_spend(
        self, outcome: Redeemed, partner: str, member: str, points: int, ref: str
    ) -> None:
        takes = self.model.spend(partner, member, points, outcome.seq)
        by_issuer: Counter[str] = Counter()
        for lot_id, take in takes:
            by_issuer[self.model.lot(lot_id).origin] += take
        assert (outcome.points, outcome.points_by_issuer) == (points, dict(by_issuer))
        self.model.redemptions.append(
            ModelRedemption(ref, partner, member, outcome.seq, points, takes)
        )

    @rule(
        partner=partners,
        member=spenders,
        percent=percents,
        hold_seconds=st.sampled_from(HOLD_SECONDS),
    )
    def authorise(self, partner: str, member: str | None, percent: int, hold_seconds: int) -> None:
        member = self._spender(member)
        points = self._points(member, percent)
        outcome = self._call(
            authorise,
            "points",
            partner_id=partner,
            ref_key=self._ref("auth"),
            points=points,
            member_id=member,
            hold_seconds=hold_seconds,
        )
        if points > self.model.spendable(member):
            refused(outcome, self.model.shortfall(member, points))
            return
        expires_us = self.model.now_us + hold_seconds * 1_000_000
        assert outcome == Authorised(self.model.size, points, expires_us), outcome
        self.model.holds[outcome.hold_seq] = ModelHold(
            outcome.hold_seq, partner, member, points, expires_us
        )
        self.model.size += 1

    @rule(
        pick=st.integers(0, 10**6),
        how=st.sampled_from(("full", "part", "part", "over", "foreign")),
    )
    def capture(self, pick: int, how: str) -> None:
        if not (self.model.holds):
            return  # a no-op step: what is drawn never depends on races' outcomes
        hold = self._hold(pick)
        partner = hold.partner
        if how == "foreign":
            partner = next(p for p in PARTNERS if p != hold.partner)
        points = {"full": hold.points, "over": hold.points + 1}.get(how, 1 + pick % hold.points)
        ref = self._ref("capture")
        outcome = self._call(
            capture, "points", partner_id=partner, ref_key=ref, hold_seq=hold.seq, points=points
        )
        member = hold.member
        if how == "foreign":
            refused(outcome, RefusalCode.UNKNOWN_HOLD)  # another partner's hold is not known
        elif hold.status != "active":
            refused(outcome, RefusalCode.HOLD_NOT_ACTIVE)
        elif hold.expires_us <= self.model.now_us:
            refused(outcome, RefusalCode.HOLD_EXPIRED)
        elif points > hold.points:
            refused(outcome, RefusalCode.OVER_CAPTURE)
        elif points > self.model.spendable(member) + hold.points:  # its own hold is released
            refused(outcome, self.model.shortfall(member, points))
        else:
            assert isinstance(outcome, Redeemed), outcome
            hold.status = "captured"  # the rest of the hold is released
            self._record_spend(outcome, partner, member, points, ref)

    @rule(pick=st.integers(0, 10**6))
    def void(self, pick: int) -> None:
        if not (self.model.holds):
            return  # a no-op step: what is drawn never depends on races' outcomes
        hold = self._hold(pick)
        outcome = self._call(
            void, None, partner_id=hold.partner, ref_key=self._ref("void"), hold_seq=hold.seq
        )
        if hold.status != "active":
            refused(outcome, RefusalCode.HOLD_NOT_ACTIVE)
            return
        assert outcome == Voided(self.model.size), outcome  # a timed-out hold may be voided
        hold.status = "voided"
        self.model.size += 1

    def _hold(self, pick: int) -> ModelHold:
        holds = list(self.model.holds.values())
        return holds[pick % len(holds)]

    # -- concurrent calls --------------------------------------------------------------

    @rule(
        racers=st.lists(
            st.tuples(
                st.sampled_from(RACERS), st.integers(0, 2), st.sampled_from(("full", "part"))
            ),
            min_size=2,
            max_size=6,
        )
    )
    def race(self, racers: list[tuple[str, int, str]]) -> None:
        """Refunds, redemptions and captures at once, each on its own connection, through
        one group committer (so they are judged in one batch or in batches racing each
        other). Whatever order the journal gave them, each success must be what the model
        predicts at its place in that order, and each refusal one the rules allow then."""
        if not (self.model.earns or self.model.redemptions or self.model.holds):
            return  # a no-op step: what is drawn never depends on races' outcomes
        calls = [c for c in (self._racer(*r) for r in racers) if c is not None]
        if len(calls) < 2:
            return
        outcomes = self._run_at_once(calls)
        successes = sorted((o.seq, i) for i, o in enumerate(outcomes) if not isinstance(o, Refusal))
        for _, i in successes:  # the journal's order: a serial history the model replays
            assert outcomes[i].seq == self.model.size, (outcomes[i], self.model.size)
            calls[i].succeeded(outcomes[i])
        for call, outcome in zip(calls, outcomes, strict=True):
            if isinstance(outcome, Refusal):
                call.refused(outcome)

    def _racer(self, kind: str, pick: int, how: str) -> Racer | None:
        model = self.model
        if kind == "refund_purchase" and model.earns:
            earn = model.earns[pick % len(model.earns)]
            if earn.purchase_minor == 0:
                return None  # a bonus: nothing to refund
            left = earn.purchase_minor - earn.refunded_minor
            amount = max(1, left if how == "full" else left // 2)
            return _PurchaseRefund(self, earn, amount, self._ref("race-refund"))
        if kind == "refund_redemption" and model.redemptions:
            redemption = model.redemptions[pick % len(model.redemptions)]
            left = redemption.points - redemption.refunded
            amount = max(1, left if how == "full" else left // 2)
            return _RedemptionRefund(self, redemption, amount, self._ref("race-refund-r"))
        if kind == "redeem":
            member = MEMBERS[pick % len(MEMBERS)]
            spendable = max(1, model.spendable(member))
            amount = spendable if how == "full" else max(1, spendable // 2)
            return _Redemption(self, PARTNERS[pick], member, amount, self._ref("race-redeem"))
        if kind == "capture" and model.holds:
            holds = list(model.holds.values())
            hold = holds[pick % len(holds)]
            amount = hold.points if how == "full" else max(1, hold.points // 2)
            return _Capture(self, hold, amount, self._ref("race-capture"))
        return None

    def _run_at_once(self, calls: list[Racer]) -> list[Any]:
        url = _with_database(self.server_url, self.database)
        committer = GroupCommitter(lambda: psycopg.connect(url, autocommit=True), self.co.journal)
        try:
            co = _Committed(self.co, committer)
            connections = [psycopg.connect(url, autocommit=True) for _ in calls]
            try:
                with ThreadPoolExecutor(max_workers=len(calls)) as pool:
                    futures = [
                        pool.submit(call.function, co, conn, **call.kwargs)
                        for call, conn in zip(calls, connections, strict=True)
                    ]
                    return [f.result(timeout=60) for f in futures]
            finally:
                for conn in connections:
                    conn.close()
        finally:
            committer.close()

    # -- refunds -----------------------------------------------------------------------

    @rule(
        pick=st.integers(0, 10**6),
        how=st.sampled_from(("full", "part", "part", "over", "foreign")),
    )
    def refund_purchase(self, pick: int, how: str) -> None:
        if not (self.model.earns):
            return  # a no-op step: what is drawn never depends on races' outcomes
        earn = self.model.earns[pick % len(self.model.earns)]
        left = earn.purchase_minor - earn.refunded_minor
        refund_minor = {"full": left, "over": left + 1}.get(how, 1 + pick % max(left, 1))
        partner = earn.partner
        if how == "foreign":
            partner = next(p for p in ISSUERS if p != earn.partner)
        self._refund_purchase(earn, refund_minor, partner)

    def _refund_purchase(self, earn: ModelEarn, refund_minor: int, partner: str) -> None:
        outcome = self._call(
            refund_purchase,
            "refund_minor",
            partner_id=partner,
            ref_key=self._ref("refund"),
            earn_ref_key=earn.ref,
            refund_minor=refund_minor,
        )
        if partner != earn.partner:
            refused(outcome, RefusalCode.UNKNOWN_TRANSACTION)
            return
        if refund_minor <= 0:
            refused(outcome, RefusalCode.INVALID_REQUEST)
            return
        if earn.refunded_minor + refund_minor > earn.purchase_minor:
            refused(outcome, RefusalCode.REFUND_EXCEEDS_ORIGINAL)
            return
        # Cumulative: after refunds totalling R of P, floor(N·R/P) points are clawed back.
        due = earn.points * (earn.refunded_minor + refund_minor) // earn.purchase_minor
        points = due - earn.clawed_back
        seq = self.model.size
        debt = self.model.claw_back(earn, points)
        earn.refunded_minor += refund_minor
        earn.clawed_back = due
        assert outcome == Refunded(seq, points, debt), outcome

    @rule(
        pick=st.integers(0, 10**6),
        how=st.sampled_from(("full", "part", "part", "over")),
    )
    def refund_redemption(self, pick: int, how: str) -> None:
        if not (self.model.redemptions):
            return  # a no-op step: what is drawn never depends on races' outcomes
        redemption = self.model.redemptions[pick % len(self.model.redemptions)]
        left = redemption.points - redemption.refunded
        points = {"full": left, "over": left + 1}.get(how, 1 + pick % max(left, 1))
        outcome = self._call(
            refund_redemption,
            "points",
            partner_id=redemption.partner,
            ref_key=self._ref("refund-r"),
            redemption_ref_key=redemption.ref,
            points=points,
        )
        if points <= 0:
            refused(outcome, RefusalCode.INVALID_REQUEST)
            return
        if points > left:
            refused(outcome, RefusalCode.REFUND_EXCEEDS_ORIGINAL)
            return
        seq = self.model.size
        self.model.give_back(redemption, points)
        assert outcome == Refunded(seq, points, 0), outcome

    @rule(pick=st.integers(0, 10**6), partner=partners)
    def spend_everything_then_refund_a_purchase(self, pick: int, partner: str) -> None:
        """The member spends what it may, then a purchase is refunded in full: the points
        it earned are gone, so the clawback leaves a debt (unless other lots cover it)."""
        if not (any(e.purchase_minor and e.points > e.clawed_back for e in self.model.earns)):
            return  # a no-op step: what is drawn never depends on races' outcomes
        earns = [e for e in self.model.earns if e.purchase_minor and e.points > e.clawed_back]
        earn = earns[pick % len(earns)]
        spendable = self.model.spendable(earn.member)
        if spendable > 0:
            ref = self._ref("redeem")
            outcome = self._call(
                redeem_points,
                "points",
                partner_id=partner,
                ref_key=ref,
                points=spendable,
                member_id=earn.member,
            )
            assert isinstance(outcome, Redeemed), outcome
            self._record_spend(outcome, partner, earn.member, spendable, ref)
        self._refund_purchase(earn, earn.purchase_minor - earn.refunded_minor, earn.partner)

    @rule(
        partner=partners,
        member=members,
        purchase_minor=amounts_minor,
        category=categories,
        cuts=st.lists(st.integers(1, 99), max_size=2, unique=True),
    )
    def purchase_then_full_refund(
        self,
        partner: str,
        member: str,
        purchase_minor: int,
        category: str | None,
        cuts: list[int],
    ) -> None:
        """A purchase refunded in full, in one or more parts, mints nothing: the member's
        balance and the issuers' total are as before. Per issuer too, unless the member
        was in debt: then the earn repaid it and the clawback took other issuers' lots
        (the documented order: own lot, then FEFO), so issuance shifts between issuers."""
        before = self._balances()
        in_debt = self.model.debt[member] > 0
        earn = self._earn(partner, member, purchase_minor, category)
        bounds = [0, *sorted(purchase_minor * cut // 100 for cut in cuts), purchase_minor]
        for low, high in itertools.pairwise(bounds):
            if high > low:
                self._refund_purchase(earn, high - low, partner)
        assert earn.clawed_back == earn.points
        after = self._balances()
        account = accounts.member(member)
        assert after[account] == before[account]
        issued = [accounts.issued(issuer) for issuer in ISSUERS]
        assert sum(after[a] for a in issued) == sum(before[a] for a in issued)
        if not in_debt:
            assert {a: after[a] for a in issued} == {a: before[a] for a in issued}

    # -- time and expiry ---------------------------------------------------------------

    @rule(
        step_us=st.sampled_from(
            (MINUTE_US, 20 * MINUTE_US, DAY_US, 3 * DAY_US, 11 * DAY_US, 32 * DAY_US)
        )
    )
    def let_time_pass(self, step_us: int) -> None:
        self.model.now_us += step_us

    @rule()
    def wait_for_the_next_expiry(self) -> None:
        """Stop exactly on the next lot or hold expiry: expired from that instant on."""
        now = self.model.now_us
        instants = [lot.expires_us for lots in self.model.lots.values() for lot in lots]
        instants += [hold.expires_us for hold in self.model.holds.values()]
        later = [instant for instant in instants if instant > now]
        if later:
            self.model.now_us = min(later)

    @rule(back_us=st.sampled_from((0, 0, 0, DAY_US)))
    def run_the_expiry_job(self, back_us: int) -> None:
        as_of_us = self.model.now_us - back_us
        done = expire_points(self.co, self.conn, as_of_us=as_of_us)
        assert done == self.model.expire(as_of_us)

    # -- checks ------------------------------------------------------------------------

    @invariant()
    def database_agrees_with_the_model(self) -> None:
        if not self.model.lots:
            return  # before set-up
        assert reads.head(self.conn).tree_size == self.model.size  # refusals write nothing
        balances = self._balances()
        assert {a: b for a, b in balances.items() if b} == {
            a: b for a, b in self.model.balances.items() if b
        }
        self._check_lots_and_debts(balances)
        self._check_holds()
        self._check_issuers(balances)
        self.steps += 1
        if self.steps % THOROUGH_EVERY_STEPS == 0:
            self._check_thoroughly()

    def _check_thoroughly(self) -> None:
        """What the reports say, what the refunds recorded, and the journal's replay."""
        for member in MEMBERS:
            summary = reports.member_summary(self.conn, member, self.model.now_us)
            assert summary is not None
            assert summary.balance_points == self.model.balances[accounts.member(member)]
            assert summary.debt_points == self.model.debt[member]
            assert summary.held_points == self.model.held(member)
            assert summary.available_points == max(0, self.model.spendable(member))
        for partner in PARTNERS:
            report = reports.partner_report(self.conn, partner)
            issued = -self.model.balances[accounts.issued(partner)]
            outstanding = sum(
                lot.remaining
                for lots in self.model.lots.values()
                for lot in lots
                if lot.origin == partner
            )
            assert (report.issued_points, report.outstanding_points) == (issued, outstanding)
            assert report.expired_points == self.model.expired_from[partner]
        recorded: Counter[str] = Counter()
        for (canonical,) in self.conn.execute(
            "SELECT canonical FROM ledger_entry WHERE kind = 'refund_earn'"
        ).fetchall():
            meta = json.loads(bytes(canonical))["meta"]
            recorded[meta["partner"]] += meta["debt_points"]
        assert +recorded == +self.model.debt_created_by
        assert verify_database(self.conn).tree_size == self.model.size

    def _balances(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT account, balance FROM ledger_balance").fetchall()
        return {str(account): int(balance) for account, balance in rows}

    def _check_lots_and_debts(self, balances: dict[str, int]) -> None:
        rows = self.conn.execute(
            "SELECT account, lot_id, origin, expires_us, opened_seq, amount_opened, remaining"
            " FROM ledger_lot ORDER BY opened_seq, posting_index"
        ).fetchall()
        stored: dict[str, list[ModelLot]] = {member: [] for member in MEMBERS}
        for account, *lot in rows:
            stored[str(account).removeprefix("member:")].append(ModelLot(*lot))
        assert stored == self.model.lots
        for member in MEMBERS:
            # (1) A member's balance is its lots less its debt, which only clawbacks of
            # points it no longer held create (the model's debt, not the ledger's).
            debt = self.model.debt[member]
            remaining = sum(lot.remaining for lot in stored[member])
            assert debt >= 0
            assert balances[accounts.member(member)] + debt == remaining, member

    def _check_holds(self) -> None:
        rows = self.conn.execute(
            "SELECT hold_seq, account, amount, expires_us, status FROM ledger_hold"
        ).fetchall()
        assert {int(r[0]): (r[1], r[2], r[3], r[4]) for r in rows} == {
            h.seq: (accounts.member(h.member), h.points, h.expires_us, h.status)
            for h in self.model.holds.values()
        }

    def _check_issuers(self, balances: dict[str, int]) -> None:
        """(3) every unit sums to zero; (2) per issuer X, where its points went.

        An earn of N points by X debits X's issued account by N and credits the member N,
        of which r repays the member's debt first and N − r opens a lot of origin X. A
        lot's points leave it by redemption (a redemption refund gives them back), by
        expiry, or by a purchase refund's clawback, which credits the issued account of
        the lot's origin; the part of a clawback that no lot covers becomes the member's
        debt and credits the issued account of the refunding partner. Summing X's entries
        and X's lots:

            −balance(issued X) = redeemed from X's lots + expired from X's lots
                                 + X's lots outstanding
                                 + debt repaid by X's earns − debt created by X's refunds

        Summed over issuers the debt terms are the members' debts, which (1) and (3) tie
        to the members' balances.
        """
        units = self.conn.execute(
            "SELECT a.unit, sum(b.balance) FROM ledger_balance b JOIN ledger_account a"
            " USING (account) GROUP BY a.unit"
        ).fetchall()
        assert {unit: int(total) for unit, total in units if total} == {}
        used: Counter[tuple[str, str]] = Counter()
        for origin, kind, points in self.conn.execute(
            "SELECT origin, kind, sum(points) FROM coalition_lot_use GROUP BY 1, 2"
        ).fetchall():
            used[(str(origin), str(kind))] += int(points)
        outstanding = {
            str(origin): int(points)
            for origin, points in self.conn.execute(
                "SELECT origin, sum(remaining) FROM ledger_lot WHERE account LIKE 'member:%'"
                " GROUP BY origin"
            ).fetchall()
        }
        m = self.model
        for issuer in ISSUERS:
            redeemed = sum(used[(issuer, k)] for k in ("redeem", "capture", "refund_redemption"))
            expired = used[(issuer, "expire")]
            assert (redeemed, expired) == (m.redeemed_from[issuer], m.expired_from[issuer])
            assert -balances.get(accounts.issued(issuer), 0) == (
                redeemed
                + expired
                + outstanding.get(issuer, 0)
                + m.debt_repaid_by[issuer]
                - m.debt_created_by[issuer]
            ), issuer
        debts = sum(m.debt_created_by.values()) - sum(m.debt_repaid_by.values())
        assert debts == sum(m.debt.values())


class _Committed(Coalition):
    """The coalition with its appends group-committed, as the API's tills are."""

    def __init__(self, plain: Coalition, committer: GroupCommitter) -> None:
        self.clock_us = plain.clock_us
        self.journal = plain.journal
        self._committer = committer

    def append(self, conn: psycopg.Connection[Any], request: EntryRequest) -> Appended | Refusal:
        result = self._committer.submit(request, timeout_seconds=60)
        return refusal_for(result) if isinstance(result, Rejection) else result


@dataclass
class Racer:
    machine: CoalitionMachine
    function: ClassVar[Callable[..., Any]]

    @property
    def kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    def succeeded(self, outcome: Any) -> None:
        raise NotImplementedError

    def refused(self, outcome: Refusal) -> None:
        assert outcome.code is RefusalCode.BUSY, outcome  # lost every retry: wrote nothing


@dataclass
class _PurchaseRefund(Racer):
    earn: ModelEarn
    refund_minor: int
    ref: str
    function = staticmethod(refund_purchase)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(
            partner_id=self.earn.partner,
            ref_key=self.ref,
            earn_ref_key=self.earn.ref,
            refund_minor=self.refund_minor,
        )

    def succeeded(self, outcome: Any) -> None:
        earn, model = self.earn, self.machine.model
        refunded = earn.refunded_minor + self.refund_minor
        assert refunded <= earn.purchase_minor, "a refund beyond its purchase was written"
        due = earn.points * refunded // earn.purchase_minor
        points, seq = due - earn.clawed_back, model.size
        debt = model.claw_back(earn, points)
        earn.refunded_minor, earn.clawed_back = refunded, due
        assert outcome == Refunded(seq, points, debt), outcome

    def refused(self, outcome: Refusal) -> None:
        if outcome.code is RefusalCode.REFUND_EXCEEDS_ORIGINAL:  # refunds only ever grow
            assert self.earn.refunded_minor + self.refund_minor > self.earn.purchase_minor
        else:
            super().refused(outcome)


@dataclass
class _RedemptionRefund(Racer):
    redemption: ModelRedemption
    points: int
    ref: str
    function = staticmethod(refund_redemption)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(
            partner_id=self.redemption.partner,
            ref_key=self.ref,
            redemption_ref_key=self.redemption.ref,
            points=self.points,
        )

    def succeeded(self, outcome: Any) -> None:
        redemption, model = self.redemption, self.machine.model
        assert redemption.refunded + self.points <= redemption.points, "over-refund written"
        seq = model.size
        model.give_back(redemption, self.points)
        assert outcome == Refunded(seq, self.points, 0), outcome

    def refused(self, outcome: Refusal) -> None:
        if outcome.code is RefusalCode.REFUND_EXCEEDS_ORIGINAL:
            assert self.redemption.refunded + self.points > self.redemption.points
        else:
            super().refused(outcome)


@dataclass
class _Redemption(Racer):
    partner: str
    member: str
    points: int
    ref: str
    function = staticmethod(redeem_points)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(
            partner_id=self.partner, ref_key=self.ref, points=self.points, member_id=self.member
        )

    def succeeded(self, outcome: Any) -> None:
        assert self.points <= self.machine.model.spendable(self.member), "overspent"
        assert isinstance(outcome, Redeemed), outcome
        self.machine._record_spend(outcome, self.partner, self.member, self.points, self.ref)

    def refused(self, outcome: Refusal) -> None:
        # Judged at its place in the order, which a refusal does not get: only the codes.
        allowed = (RefusalCode.INSUFFICIENT_POINTS, RefusalCode.POINTS_EXPIRED, RefusalCode.BUSY)
        assert outcome.code in allowed, outcome


@dataclass
class _Capture(Racer):
    hold: ModelHold
    points: int
    ref: str
    function = staticmethod(capture)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(
            partner_id=self.hold.partner,
            ref_key=self.ref,
            hold_seq=self.hold.seq,
            points=self.points,
        )

    def succeeded(self, outcome: Any) -> None:
        hold, model = self.hold, self.machine.model
        assert hold.status == "active", "a hold was captured twice"
        assert hold.expires_us > model.now_us and self.points <= hold.points
        assert isinstance(outcome, Redeemed), outcome
        hold.status = "captured"
        self.machine._record_spend(outcome, hold.partner, hold.member, self.points, self.ref)

    def refused(self, outcome: Refusal) -> None:
        if outcome.code is RefusalCode.HOLD_NOT_ACTIVE:
            assert self.hold.status != "active"  # another racer, or an earlier step, took it
        elif outcome.code is RefusalCode.HOLD_EXPIRED:
            assert self.hold.expires_us <= self.machine.model.now_us
        else:
            allowed = (RefusalCode.INSUFFICIENT_POINTS, RefusalCode.POINTS_EXPIRED)
            assert outcome.code in (*allowed, RefusalCode.BUSY), outcome


def set_up_coalition(co: Coalition, conn: psycopg.Connection[Any], now_us: int) -> None:
    for partner in PARTNERS:
        ok(onboard_partner(co, conn, partner, f"{partner.title()} Ltd", "RUB"))
        ok(publish_terms(co, conn, partner, TERMS, now_us - DAY_US, f"terms-{partner}"))
        ok(publish_earning_rules(co, conn, partner, RULES, now_us - DAY_US, f"rules-{partner}"))
    ok(set_expiry_policy(co, conn, EXPIRY_MONTHS, "expiry"))
    for member in MEMBERS:
        ok(enroll_member(co, conn, member))


def ok(outcome: Any) -> Any:
    assert not isinstance(outcome, Refusal), outcome
    return outcome


def refused(outcome: Any, code: RefusalCode) -> None:
    assert isinstance(outcome, Refusal), outcome
    assert outcome.code is code, outcome


def _drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _with_database(url: str, name: str) -> str:
    base, sep, query = url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}{sep}{query}"


def test_random_coalition_operations_keep_the_books(server_url: str, template_name: str) -> None:
    CoalitionMachine.server_url = server_url
    CoalitionMachine.template_name = template_name
    with ThreadPoolExecutor(max_workers=1) as dropper:  # waits for the last drops
        CoalitionMachine.dropper = dropper
        run_state_machine_as_test(
            CoalitionMachine,
            settings=settings(
                max_examples=20,
                stateful_step_count=50,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            ),
        )


# -- what the machine found, each on its own ---------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now_us = T0_US

    def __call__(self) -> int:
        return self.now_us


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def co(clock: Clock) -> Coalition:
    return Coalition(clock_us=clock)


@pytest.fixture()
def conn(db_url: str, co: Coalition, clock: Clock) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as c:
        set_up_coalition(co, c, clock.now_us)
        yield c


def earn_rub(
    co: Coalition, conn: psycopg.Connection[Any], partner: str, rub: int, ref: str
) -> None:
    ok(
        earn_points(
            co,
            conn,
            partner_id=partner,
            ref_key=ref,
            purchase_minor=rub * 100,
            currency="RUB",
            member_id="M1",
        )
    )


def test_expiry_sweeps_the_expired_points_of_a_member_in_debt(
    co: Coalition, conn: psycopg.Connection[Any], clock: Clock
) -> None:
    earn_rub(co, conn, "grocer", 1_000, "g-1")  # 10 points, expiring in a month
    ok(redeem_points(co, conn, partner_id="airline", ref_key="a-1", points=10, member_id="M1"))
    refund = ok(
        refund_purchase(
            co, conn, partner_id="grocer", ref_key="rf-1", earn_ref_key="g-1", refund_minor=100_000
        )
    )
    assert refund.debt_points == 10  # already spent
    ok(
        refund_redemption(
            co, conn, partner_id="airline", ref_key="ra-1", redemption_ref_key="a-1", points=10
        )
    )  # the 10 points go back to their lot; the debt stays
    clock.now_us += 32 * DAY_US
    done = expire_points(co, conn, as_of_us=clock.now_us)
    summary = reports.member_summary(conn, "M1", clock.now_us)
    assert summary is not None
    assert (done, summary.expired_unswept_points) == (Expired(1, 10, {"grocer": 10}), 0)


def test_expiry_sweeps_expired_points_that_a_hold_still_counts_on(
    co: Coalition, conn: psycopg.Connection[Any], clock: Clock
) -> None:
    earn_rub(co, conn, "grocer", 1_000, "g-1")  # expires 31 days on
    clock.now_us += 30 * DAY_US
    earn_rub(co, conn, "fuel", 1_000, "f-1")
    ok(
        authorise(
            co,
            conn,
            partner_id="airline",
            ref_key="auth-1",
            points=20,
            member_id="M1",
            hold_seconds=7 * 24 * 3600,
        )
    )
    clock.now_us += 2 * DAY_US  # grocer's 10 have expired; the hold runs for 5 more days
    done = expire_points(co, conn, as_of_us=clock.now_us)
    assert done == Expired(1, 10, {"grocer": 10})


def test_a_second_expiry_run_for_the_same_instant_sweeps_points_given_back_since(
    co: Coalition, conn: psycopg.Connection[Any], clock: Clock
) -> None:
    earn_rub(co, conn, "grocer", 1_000, "g-1")
    for ref in ("a-1", "a-2"):
        ok(redeem_points(co, conn, partner_id="airline", ref_key=ref, points=5, member_id="M1"))
    clock.now_us += 32 * DAY_US  # the lot has expired, empty
    as_of_us = clock.now_us  # e.g. `coalition expire --as-of …` run twice
    for ref in ("a-1", "a-2"):
        back = refund_redemption(
            co, conn, partner_id="airline", ref_key=f"back-{ref}", redemption_ref_key=ref, points=5
        )
        assert isinstance(back, Refunded)  # 5 points back to the expired lot
        assert expire_points(co, conn, as_of_us=as_of_us) == Expired(1, 5, {"grocer": 5}), ref

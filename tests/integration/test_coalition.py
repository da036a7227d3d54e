"""Coalition use cases against PostgreSQL: partners, members, earning, redeeming, holds,
refunds and expiry — every movement through the journal."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from coalition import reports
from coalition.context import Coalition
from coalition.earn import bonus_points, earn_points
from coalition.earning import EarningRules
from coalition.expiry import expire_points
from coalition.members import enroll_member, link_card, member_status, set_member_status
from coalition.outcomes import (
    Authorised,
    Earned,
    Redeemed,
    Refunded,
    Refusal,
    RefusalCode,
    Voided,
)
from coalition.partners import (
    get_partner,
    onboard_partner,
    publish_earning_rules,
    publish_terms,
    set_expiry_policy,
    set_partner_status,
    set_tier_policy,
)
from coalition.policy import earn_context, earning_rules_at, expiry_months, tier_policy
from coalition.redeem import authorise, capture, redeem_points, void
from coalition.refunds import refund_purchase, refund_redemption
from coalition.tiers import Tier, TierPolicy
from ledger.verify_db import verify_database
from settlement.terms import PartnerTerms

DAY_US = 86_400_000_000
T0 = 1_800_000_000_000_000  # 2027-01-15T08:00:00Z
TERMS = PartnerTerms(
    Decimal("0.01"), Decimal("0.008"), 50, Decimal("0.5"), "monthly", "multilateral"
)
RUB_RULES = EarningRules("RUB", 1, 10_000, {"alcohol": Decimal(0), "fresh": Decimal(2)})


class Clock:
    def __init__(self) -> None:
        self.now_us = T0

    def __call__(self) -> int:
        return self.now_us


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def co(clock: Clock) -> Coalition:
    return Coalition(clock_us=clock)


@pytest.fixture()
def conn(db_url: str, co: Coalition) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as c:
        for partner in ("grocer", "fuel", "airline"):
            ok(onboard_partner(co, c, partner, f"{partner.title()} Ltd", "RUB"))
            ok(publish_terms(co, c, partner, TERMS, T0 - DAY_US, f"terms-{partner}-1"))
            ok(publish_earning_rules(co, c, partner, RUB_RULES, T0 - DAY_US, f"rules-{partner}-1"))
        ok(set_expiry_policy(co, c, 24, "expiry-1"))
        for member in ("M1", "M2", "M3"):
            ok(enroll_member(co, c, member))
        yield c


def ok(outcome: Any) -> Any:
    assert not isinstance(outcome, Refusal), outcome
    return outcome


def refused(outcome: Any, code: RefusalCode) -> None:
    assert isinstance(outcome, Refusal), outcome
    assert outcome.code is code, outcome


def earn(
    co: Coalition, conn: Any, partner: str, member: str, rub: int, key: str, **kw: Any
) -> Earned:
    return ok(
        earn_points(
            co,
            conn,
            partner_id=partner,
            ref_key=key,
            purchase_minor=rub * 100,
            currency="RUB",
            member_id=member,
            **kw,
        )
    )


def test_earning_follows_the_rules_and_opens_a_lot_of_the_issuer(co, conn, clock):
    earned = earn(co, conn, "grocer", "M1", 2_999, "g-1")
    assert earned.points == 29  # 1 point per 100 RUB, rounded down
    fresh = earn(co, conn, "grocer", "M1", 1_000, "g-2", category="fresh")
    assert fresh.points == 20
    summary = reports.member_summary(conn, "M1", clock.now_us)
    assert summary is not None and summary.available_points == 49
    assert {lot.origin for lot in summary.lots} == {"grocer"}
    assert all(
        lot.expires_us is not None and lot.expires_us > T0 + 700 * DAY_US for lot in summary.lots
    )  # 24 months
    refused(
        earn_points(
            co,
            conn,
            partner_id="grocer",
            ref_key="g-3",
            purchase_minor=100,
            currency="EUR",
            member_id="M1",
        ),
        RefusalCode.CURRENCY_NOT_ACCEPTED,
    )


def test_a_retry_gets_the_original_answer_and_a_reused_reference_is_refused(co, conn):
    first = earn(co, conn, "fuel", "M2", 500, "pump-1")
    again = earn(co, conn, "fuel", "M2", 500, "pump-1")
    assert (again.seq, again.points, again.replayed) == (first.seq, first.points, True)
    refused(
        earn_points(
            co,
            conn,
            partner_id="fuel",
            ref_key="pump-1",
            purchase_minor=1,
            currency="RUB",
            member_id="M2",
        ),
        RefusalCode.DUPLICATE_REFERENCE,
    )


def test_cards_resolve_to_members_and_are_not_shared(co, conn):
    ok(link_card(co, conn, "M1", "grocer", "CARD-77"))
    earned = ok(
        earn_points(
            co,
            conn,
            partner_id="grocer",
            ref_key="c-1",
            purchase_minor=10_000,
            currency="RUB",
            card_number="CARD-77",
        )
    )
    assert earned.points == 1
    refused(link_card(co, conn, "M2", "grocer", "CARD-77"), RefusalCode.CARD_TAKEN)
    refused(
        earn_points(
            co,
            conn,
            partner_id="grocer",
            ref_key="c-2",
            purchase_minor=10_000,
            currency="RUB",
            card_number="NOPE",
        ),
        RefusalCode.UNKNOWN_MEMBER,
    )


def test_blocked_members_and_suspended_partners_are_refused(co, conn):
    earn(co, conn, "grocer", "M3", 1_000, "g-b1")
    ok(set_member_status(co, conn, "M3", "blocked", "block-M3"))
    refused(
        earn_points(
            co,
            conn,
            partner_id="grocer",
            ref_key="g-b2",
            purchase_minor=10_000,
            currency="RUB",
            member_id="M3",
        ),
        RefusalCode.MEMBER_BLOCKED,
    )
    refused(
        redeem_points(co, conn, partner_id="fuel", ref_key="r-b", points=1, member_id="M3"),
        RefusalCode.MEMBER_BLOCKED,
    )
    ok(set_partner_status(co, conn, "fuel", "suspended", "suspend-fuel"))
    earn(co, conn, "grocer", "M1", 1_000, "g-b3")
    refused(
        redeem_points(co, conn, partner_id="fuel", ref_key="r-s", points=1, member_id="M1"),
        RefusalCode.PARTNER_SUSPENDED,
    )
    refused(
        redeem_points(co, conn, partner_id="nobody", ref_key="r-u", points=1, member_id="M1"),
        RefusalCode.UNKNOWN_PARTNER,
    )


def test_redeeming_elsewhere_records_the_issuers(co, conn):
    earn(co, conn, "grocer", "M1", 3_000, "g-r1")
    earn(co, conn, "fuel", "M1", 2_000, "f-r1")
    redeemed = ok(
        redeem_points(co, conn, partner_id="airline", ref_key="a-1", points=40, member_id="M1")
    )
    assert isinstance(redeemed, Redeemed)
    # Same expiry (earned at the same moment): oldest first, so all 30 of grocer's go first.
    assert redeemed.points_by_issuer == {"grocer": 30, "fuel": 10}
    refused(
        redeem_points(co, conn, partner_id="airline", ref_key="a-2", points=11, member_id="M1"),
        RefusalCode.INSUFFICIENT_POINTS,
    )
    report = reports.partner_report(conn, "grocer")
    assert report.issued_points == 30
    assert report.redeemed_elsewhere_points + report.outstanding_points == 30


def test_authorise_capture_part_and_release_the_rest(co, conn, clock):
    earn(co, conn, "grocer", "M2", 10_000, "g-h1")
    hold = ok(
        authorise(co, conn, partner_id="airline", ref_key="auth-1", points=80, member_id="M2")
    )
    assert isinstance(hold, Authorised)
    summary = reports.member_summary(conn, "M2", clock.now_us)
    assert (summary.held_points, summary.available_points) == (80, 20)
    refused(
        redeem_points(co, conn, partner_id="fuel", ref_key="f-h", points=21, member_id="M2"),
        RefusalCode.INSUFFICIENT_POINTS,
    )
    refused(
        capture(co, conn, partner_id="airline", ref_key="cap-x", hold_seq=hold.hold_seq, points=81),
        RefusalCode.OVER_CAPTURE,
    )
    refused(
        capture(co, conn, partner_id="fuel", ref_key="cap-y", hold_seq=hold.hold_seq, points=10),
        RefusalCode.UNKNOWN_HOLD,
    )  # not fuel's hold
    captured = ok(
        capture(co, conn, partner_id="airline", ref_key="cap-1", hold_seq=hold.hold_seq, points=50)
    )
    assert captured.points == 50
    summary = reports.member_summary(conn, "M2", clock.now_us)
    assert (summary.balance_points, summary.held_points) == (50, 0)
    refused(
        void(co, conn, partner_id="airline", ref_key="void-1", hold_seq=hold.hold_seq),
        RefusalCode.HOLD_NOT_ACTIVE,
    )


def test_a_hold_times_out(co, conn, clock):
    earn(co, conn, "grocer", "M2", 1_000, "g-t1")
    hold = ok(
        authorise(
            co,
            conn,
            partner_id="airline",
            ref_key="auth-t",
            points=10,
            member_id="M2",
            hold_seconds=60,
        )
    )
    clock.now_us += 61_000_000
    refused(
        capture(co, conn, partner_id="airline", ref_key="cap-t", hold_seq=hold.hold_seq, points=10),
        RefusalCode.HOLD_EXPIRED,
    )
    assert isinstance(
        ok(void(co, conn, partner_id="airline", ref_key="void-t", hold_seq=hold.hold_seq)), Voided
    )


def test_two_tills_race_for_the_last_points_and_exactly_one_wins(co, conn, db_url):
    earn(co, conn, "grocer", "M3", 5_000, "g-race")  # 50 points
    outcomes: list[Any] = []
    barrier = threading.Barrier(2)

    def till(key: str) -> None:
        with psycopg.connect(db_url, autocommit=True) as own:
            barrier.wait()
            outcomes.append(
                redeem_points(co, own, partner_id="fuel", ref_key=key, points=40, member_id="M3")
            )

    threads = [threading.Thread(target=till, args=(f"till-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wins = [o for o in outcomes if isinstance(o, Redeemed)]
    losses = [o for o in outcomes if isinstance(o, Refusal)]
    assert len(wins) == 1 and len(losses) == 1
    assert losses[0].code is RefusalCode.INSUFFICIENT_POINTS


def test_refunding_a_purchase_claws_back_and_a_full_cycle_mints_nothing(co, conn, clock):
    earned = earn(co, conn, "grocer", "M1", 1_000, "g-p1")  # 10 points
    part = ok(
        refund_purchase(
            co, conn, partner_id="grocer", ref_key="rf-1", earn_ref_key="g-p1", refund_minor=33_300
        )
    )  # a third of the purchase
    assert isinstance(part, Refunded) and part.points == 3  # floor(10 × 333/1000)
    rest = ok(
        refund_purchase(
            co, conn, partner_id="grocer", ref_key="rf-2", earn_ref_key="g-p1", refund_minor=66_700
        )
    )
    assert rest.points == earned.points - part.points  # cumulative: exactly all 10 come back
    refused(
        refund_purchase(
            co, conn, partner_id="grocer", ref_key="rf-3", earn_ref_key="g-p1", refund_minor=1
        ),
        RefusalCode.REFUND_EXCEEDS_ORIGINAL,
    )
    summary = reports.member_summary(conn, "M1", clock.now_us)
    assert summary.balance_points == 0 and summary.debt_points == 0
    assert reports.partner_report(conn, "grocer").issued_points == 0


def test_refund_of_spent_points_leaves_a_debt_that_the_next_earn_repays(co, conn, clock):
    earn(co, conn, "grocer", "M2", 1_000, "g-d1")
    ok(redeem_points(co, conn, partner_id="airline", ref_key="a-d1", points=10, member_id="M2"))
    refund = ok(
        refund_purchase(
            co,
            conn,
            partner_id="grocer",
            ref_key="rf-d1",
            earn_ref_key="g-d1",
            refund_minor=100_000,
        )
    )
    assert (refund.points, refund.debt_points) == (10, 10)
    summary = reports.member_summary(conn, "M2", clock.now_us)
    assert (summary.balance_points, summary.debt_points) == (-10, 10)
    refused(
        redeem_points(co, conn, partner_id="airline", ref_key="a-d2", points=1, member_id="M2"),
        RefusalCode.INSUFFICIENT_POINTS,
    )
    earn(co, conn, "fuel", "M2", 1_500, "f-d1")  # 15 points: 10 repay the debt
    summary = reports.member_summary(conn, "M2", clock.now_us)
    assert (summary.balance_points, summary.debt_points, summary.available_points) == (5, 0, 5)


def test_refunding_a_redemption_restores_the_original_lots(co, conn, clock):
    earn(co, conn, "grocer", "M3", 2_000, "g-rr")
    before = {lot.lot_id: lot.expires_us for lot in reports.member_summary(conn, "M3", T0).lots}
    ok(redeem_points(co, conn, partner_id="fuel", ref_key="f-rr", points=15, member_id="M3"))
    back = ok(
        refund_redemption(
            co, conn, partner_id="fuel", ref_key="f-rr-back", redemption_ref_key="f-rr", points=15
        )
    )
    assert back.points == 15
    lots = reports.member_summary(conn, "M3", clock.now_us).lots
    assert {lot.lot_id: lot.expires_us for lot in lots} == before
    assert sum(lot.remaining for lot in lots) == 20
    refused(
        refund_redemption(
            co, conn, partner_id="fuel", ref_key="f-rr-2", redemption_ref_key="f-rr", points=1
        ),
        RefusalCode.REFUND_EXCEEDS_ORIGINAL,
    )


def test_expiry_moves_points_to_breakage_once(co, conn, clock):
    ok(set_expiry_policy(co, conn, 1, "expiry-short"))
    earn(co, conn, "grocer", "M1", 1_200, "g-e1")
    earn(co, conn, "fuel", "M1", 800, "f-e1")
    clock.now_us += 40 * DAY_US
    refused(
        redeem_points(co, conn, partner_id="airline", ref_key="a-e1", points=5, member_id="M1"),
        RefusalCode.POINTS_EXPIRED,
    )
    done = expire_points(co, conn, as_of_us=clock.now_us)
    assert (done.entries, done.points, done.points_by_issuer) == (1, 20, {"fuel": 8, "grocer": 12})
    again = expire_points(co, conn, as_of_us=clock.now_us)
    assert again.entries == 0
    assert reports.partner_report(conn, "grocer").expired_points == 12
    with pytest.raises(ValueError, match="to come"):
        expire_points(co, conn, as_of_us=clock.now_us + DAY_US)


def test_tiers_multiply_after_rolling_spend(co, conn, clock):
    vip = TierPolicy("RUB", 30, (Tier("base", 0, Decimal(1)), Tier("vip", 1_000_000, Decimal(2))))
    ok(set_tier_policy(co, conn, vip, "tiers-1"))
    first = earn(co, conn, "grocer", "M2", 10_000, "g-v1")
    assert (first.points, first.tier) == (100, "base")
    second = earn(co, conn, "fuel", "M2", 100, "f-v1")
    assert (second.points, second.tier) == (2, "vip")
    clock.now_us += 31 * DAY_US
    third = earn(co, conn, "fuel", "M2", 100, "f-v2")
    assert third.tier == "base"


def test_bonus_points_and_kpis(co, conn, clock):
    ok(
        bonus_points(
            co,
            conn,
            issuer="coalition",
            member_id="M1",
            points=50,
            reason="welcome",
            ref_key="welcome-M1",
        )
    )
    earn(co, conn, "grocer", "M2", 1_000, "g-k1")
    ok(redeem_points(co, conn, partner_id="airline", ref_key="a-k1", points=5, member_id="M2"))
    ok(redeem_points(co, conn, partner_id="fuel", ref_key="f-k1", points=20, member_id="M1"))
    k = reports.kpis(conn, T0 - DAY_US, T0 + DAY_US)
    assert (k.members_enrolled, k.members_active, k.purchases) == (3, 2, 1)
    assert k.flow_points == {("coalition", "fuel"): 20, ("grocer", "airline"): 5}
    assert k.average_purchase_minor == {"RUB": 100_000}
    verify_database(conn)  # the whole coalition's journal replays


def test_bad_input_is_refused_and_writes_nothing(co, conn):
    from ledger import reads

    size = reads.head(conn).tree_size
    for outcome in (
        onboard_partner(co, conn, "Bad Id", "x", "RUB"),
        onboard_partner(co, conn, "ok-id", "", "RUB"),
        onboard_partner(co, conn, "ok-id", "X", "PTS"),
        enroll_member(co, conn, "has space"),
        earn_points(
            co,
            conn,
            partner_id="grocer",
            ref_key="k",
            purchase_minor=0,
            currency="RUB",
            member_id="M1",
        ),
        earn_points(
            co,
            conn,
            partner_id="grocer",
            ref_key="k",
            purchase_minor=1,
            currency="RUB",
            member_id="M1",
            card_number="C",
        ),
        redeem_points(co, conn, partner_id="grocer", ref_key="k", points=-5, member_id="M1"),
        set_expiry_policy(co, conn, 0, "bad-expiry"),
    ):
        refused(outcome, RefusalCode.INVALID_REQUEST)
    assert reads.head(conn).tree_size == size


def test_what_an_earn_reads_in_one_statement_equals_the_separate_readers(co, conn):
    def separately(partner: str, member: str | None, time_us: int) -> tuple[Any, ...]:
        found = get_partner(conn, partner)
        return (
            None if found is None else found.status,
            None if member is None else member_status(conn, member),
            earning_rules_at(conn, partner, time_us),
            expiry_months(conn),
            tier_policy(conn),
        )

    def at_once(partner: str, member: str | None, time_us: int) -> tuple[Any, ...]:
        c = earn_context(conn, partner, member, time_us)
        return (c.partner_status, c.member_status, c.rules, c.expiry_months, c.tier_policy)

    def same_everywhere() -> None:
        for partner in ("grocer", "fuel", "nobody"):
            for member in ("M1", "M2", "ghost", None):
                for time_us in (T0 - 2 * DAY_US, T0, T0 + DAY_US):
                    assert at_once(partner, member, time_us) == separately(
                        partner, member, time_us
                    ), (partner, member, time_us)

    same_everywhere()
    ok(set_partner_status(co, conn, "fuel", "suspended", "suspend-fuel"))
    ok(set_member_status(co, conn, "M2", "blocked", "block-m2"))
    vip = TierPolicy("RUB", 30, (Tier("base", 0, Decimal(1)), Tier("vip", 1_000_000, Decimal(2))))
    ok(set_tier_policy(co, conn, vip, "tiers-ctx"))
    newer = EarningRules("RUB", 2, 10_000, {})
    ok(publish_earning_rules(co, conn, "grocer", newer, T0 + DAY_US // 2, "rules-grocer-2"))
    same_everywhere()
    assert at_once("grocer", "M1", T0 + DAY_US)[2] == (2, newer)
    assert at_once("fuel", "M2", T0)[:2] == ("suspended", "blocked")

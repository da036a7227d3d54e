"""KPIs per partner (coalition.partner_kpis) against the coalition's own KPIs over the same
period: the partners' figures add up to the coalition's, each rate is its partner's own
ratio, expiry counts against the issuer, and partners come a keyset page at a time."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from coalition import reports
from coalition.context import Coalition
from coalition.expiry import expire_points
from coalition.partner_kpis import partner_kpis, partners_kpis
from coalition.redeem import redeem_points
from tests.integration.test_coalition import DAY_US, T0, Clock, clock, co, conn, earn, ok

__all__ = ["clock", "co", "conn"]  # the fixtures, used by name


def test_partners_add_up_to_the_coalition_and_rates_are_their_own(
    co: Coalition, conn: Any, clock: Clock
) -> None:
    earn(co, conn, "grocer", "M1", 2_000, "g-1")  # 20 points
    earn(co, conn, "grocer", "M2", 1_000, "g-2")  # 10
    earn(co, conn, "fuel", "M2", 3_000, "f-1")  # 30
    ok(redeem_points(co, conn, partner_id="airline", ref_key="a-1", points=5, member_id="M2"))
    ok(redeem_points(co, conn, partner_id="grocer", ref_key="g-3", points=4, member_id="M1"))
    day = (T0 - DAY_US, T0 + DAY_US)
    rows = {k.partner_id: k for k in partner_kpis(conn, *day)}
    whole = reports.kpis(conn, *day)
    assert sorted(rows) == ["airline", "fuel", "grocer"]
    assert sum(k.points_issued for k in rows.values()) == whole.points_issued == 60
    assert sum(k.points_redeemed_at for k in rows.values()) == whole.points_redeemed == 9
    assert sum(k.points_redeemed_of_issuance for k in rows.values()) == whole.points_redeemed
    by_issuer: dict[str, int] = {}
    for (issuer, _), points in whole.flow_points.items():
        by_issuer[issuer] = by_issuer.get(issuer, 0) + points
    assert {
        p: k.points_redeemed_of_issuance for p, k in rows.items() if k.points_redeemed_of_issuance
    } == by_issuer
    assert (rows["airline"].points_redeemed_at, rows["grocer"].points_redeemed_at) == (5, 4)
    assert (rows["grocer"].members_active, rows["fuel"].members_active) == (2, 1)
    assert rows["airline"].members_active == 1  # redeemed there, earned nowhere
    grocer = rows["grocer"]
    assert grocer.redemption_rate == reports.ratio(grocer.points_redeemed_of_issuance, 30)
    assert rows["airline"].redemption_rate == Decimal(0)  # issued nothing: no ratio

    clock.now_us = T0 + 800 * DAY_US  # past the 24 months of expiry
    done = expire_points(co, conn, as_of_us=clock.now_us)
    later = (clock.now_us - DAY_US, clock.now_us + DAY_US)
    expired = {k.partner_id: k for k in partner_kpis(conn, *later)}
    assert sum(k.points_expired for k in expired.values()) == done.points
    assert {p: k.points_expired for p, k in expired.items() if k.points_expired} == (
        done.points_by_issuer
    )
    assert all(k.breakage_rate == 0 for k in expired.values())  # issued nothing that day


def test_partners_come_a_keyset_page_at_a_time(co: Coalition, conn: Any) -> None:
    day = (T0 - DAY_US, T0 + DAY_US)
    first = [k.partner_id for k in partner_kpis(conn, *day, limit=2)]
    rest = [k.partner_id for k in partner_kpis(conn, *day, after=first[-1], limit=2)]
    assert (first, rest) == (["airline", "fuel"], ["grocer"])
    assert partner_kpis(conn, *day, after="grocer") == []
    assert [k.partner_id for k in partners_kpis(conn, *day, ["fuel"])] == ["fuel"]
    assert len(partner_kpis(conn, *day, limit=10_000)) == 3  # bounded, not refused

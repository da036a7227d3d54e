"""KPIs per partner for a period: what it issued, what was redeemed at it, what became of
its issuance (redeemed anywhere, expired: the redemption and breakage rates), and its
active members. Read from the coalition's projections, one statement per measure, for a
keyset page of partners (by id), so a page costs the same with 15 partners or 1,500."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from coalition.context import Conn
from coalition.reports import ratio

PARTNERS_PAGE_MAX = 100
_REDEEMING = ("redeem", "capture", "refund_redemption")  # refunds count negative


@dataclass(frozen=True, slots=True)
class PartnerKpis:
    partner_id: str
    points_issued: int  # earned at this partner in the period
    points_redeemed_at: int  # redeemed at this partner, whoever issued them
    points_redeemed_of_issuance: int  # this partner's points redeemed anywhere
    points_expired: int  # this partner's points that expired
    redemption_rate: Decimal  # redeemed of issuance / issued, in the period
    breakage_rate: Decimal  # expired / issued, in the period
    members_active: int  # earned or redeemed at this partner in the period


def partner_kpis(
    conn: Conn, start_us: int, end_us: int, *, after: str = "", limit: int = 50
) -> list[PartnerKpis]:
    """The partners after ``after`` (by id, at most ``limit``), each with its figures."""
    limit = max(1, min(limit, PARTNERS_PAGE_MAX))
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT partner_id FROM coalition_partner WHERE partner_id > %s"
            " ORDER BY partner_id LIMIT %s",
            (after, limit),
        ).fetchall()
    ]
    return partners_kpis(conn, start_us, end_us, ids)


def partners_kpis(conn: Conn, start_us: int, end_us: int, ids: list[str]) -> list[PartnerKpis]:
    named = {"start": start_us, "end": end_us, "ids": ids, "redeeming": list(_REDEEMING)}
    issued = _by_partner(
        conn,
        "SELECT partner_id, sum(points) FROM coalition_earn WHERE time_us >= %(start)s"
        " AND time_us < %(end)s AND partner_id = ANY(%(ids)s) GROUP BY 1",
        named,
    )
    redeemed_at = _by_partner(
        conn,
        "SELECT partner_id, sum(points) FROM coalition_lot_use WHERE time_us >= %(start)s"
        " AND time_us < %(end)s AND kind = ANY(%(redeeming)s) AND partner_id = ANY(%(ids)s)"
        " GROUP BY 1",
        named,
    )
    redeemed_of = _by_partner(
        conn,
        "SELECT origin, sum(points) FROM coalition_lot_use WHERE time_us >= %(start)s"
        " AND time_us < %(end)s AND kind = ANY(%(redeeming)s) AND origin = ANY(%(ids)s)"
        " GROUP BY 1",
        named,
    )
    expired = _by_partner(
        conn,
        "SELECT origin, sum(points) FROM coalition_lot_use WHERE time_us >= %(start)s"
        " AND time_us < %(end)s AND kind = 'expire' AND origin = ANY(%(ids)s) GROUP BY 1",
        named,
    )
    active = _by_partner(
        conn,
        "SELECT partner_id, count(DISTINCT member_id) FROM (SELECT partner_id, member_id"
        " FROM coalition_earn WHERE time_us >= %(start)s AND time_us < %(end)s"
        " AND partner_id = ANY(%(ids)s) UNION ALL SELECT partner_id, member_id"
        " FROM coalition_redemption WHERE time_us >= %(start)s AND time_us < %(end)s"
        " AND partner_id = ANY(%(ids)s)) m GROUP BY 1",
        named,
    )
    found = []
    for p in ids:
        made = issued.get(p, 0)
        found.append(
            PartnerKpis(
                p,
                made,
                redeemed_at.get(p, 0),
                redeemed_of.get(p, 0),
                expired.get(p, 0),
                ratio(redeemed_of.get(p, 0), made),
                ratio(expired.get(p, 0), made),
                active.get(p, 0),
            )
        )
    return found


def _by_partner(conn: Conn, sql: str, named: dict[str, object]) -> dict[str, int]:
    return {str(r[0]): int(r[1] or 0) for r in conn.execute(sql, named).fetchall()}

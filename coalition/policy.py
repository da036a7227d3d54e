"""Reading what is in force: a partner's terms and earning rules at a moment, the
coalition's expiry and tier policies, and a member's rolling spend."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from coalition.context import Conn
from coalition.earning import EarningRules
from coalition.tiers import TierPolicy
from ledger.timefmt import datetime_to_us
from settlement.terms import PartnerTerms


def _in_force(conn: Conn, table: str, column: str, partner_id: str, time_us: int) -> Any:
    row = conn.execute(
        f"SELECT version, {column} FROM {table} WHERE partner_id = %s"
        " AND effective_from_us <= %s ORDER BY effective_from_us DESC, version DESC LIMIT 1",
        (partner_id, time_us),
    ).fetchone()
    return row


def earning_rules_at(conn: Conn, partner_id: str, time_us: int) -> tuple[int, EarningRules] | None:
    row = _in_force(conn, "coalition_earning_rules", "rules", partner_id, time_us)
    return None if row is None else (int(row[0]), EarningRules.from_json(row[1]))


def terms_at(conn: Conn, partner_id: str, time_us: int) -> tuple[int, PartnerTerms] | None:
    row = _in_force(conn, "coalition_terms", "terms", partner_id, time_us)
    return None if row is None else (int(row[0]), PartnerTerms.from_json(row[1]))


def _policy(conn: Conn, name: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT policy FROM coalition_policy WHERE name = %s", (name,)).fetchone()
    return None if row is None else dict(row[0])


def expiry_months(conn: Conn) -> int | None:
    """Months points stay spendable; None when the coalition lets points never expire."""
    policy = _policy(conn, "expiry")
    return None if policy is None else policy.get("months")


def tier_policy(conn: Conn) -> TierPolicy | None:
    policy = _policy(conn, "tiers")
    return None if policy is None else TierPolicy.from_json(policy)


@dataclass(frozen=True, slots=True)
class EarnContext:
    partner_status: str | None  # None: no such partner
    member_status: str | None  # None: no such member (or none named)
    rules: tuple[int, EarningRules] | None  # version and rules in force
    expiry_months: int | None
    tier_policy: TierPolicy | None


_EARN_CONTEXT = """
SELECT p.status, m.status, r.version, r.rules, expiry.policy, tiers.policy
FROM (VALUES (1)) AS one (x)
LEFT JOIN coalition_partner p ON p.partner_id = %(partner)s
LEFT JOIN coalition_member m ON m.member_id = %(member)s
LEFT JOIN LATERAL (
    SELECT version, rules FROM coalition_earning_rules WHERE partner_id = %(partner)s
    AND effective_from_us <= %(time)s ORDER BY effective_from_us DESC, version DESC LIMIT 1
) r ON true
LEFT JOIN coalition_policy expiry ON expiry.name = 'expiry'
LEFT JOIN coalition_policy tiers ON tiers.name = 'tiers'
"""


def earn_context(conn: Conn, partner_id: str, member_id: str | None, time_us: int) -> EarnContext:
    """Everything an earn reads before it appends, in one statement: the same answers as
    ``get_partner``, ``member_status``, ``earning_rules_at``, ``expiry_months`` and
    ``tier_policy`` (a test holds them equal)."""
    row = conn.execute(
        _EARN_CONTEXT, {"partner": partner_id, "member": member_id, "time": time_us}
    ).fetchone()
    assert row is not None  # one row, always
    partner_status, member_status, version, rules, expiry, tiers = row
    return EarnContext(
        partner_status,
        member_status,
        None if version is None else (int(version), EarningRules.from_json(rules)),
        None if expiry is None else dict(expiry).get("months"),
        None if tiers is None else TierPolicy.from_json(dict(tiers)),
    )


def rolling_spend_minor(
    conn: Conn, member_id: str, currency: str, since_us: int, until_us: int
) -> int:
    """Net purchases (refunds deducted) across all partners in (since, until]."""
    row = conn.execute(
        "SELECT coalesce(sum(purchase_minor - refunded_minor), 0) FROM coalition_earn"
        " WHERE member_id = %s AND currency = %s AND time_us > %s AND time_us <= %s",
        (member_id, currency, since_us, until_us),
    ).fetchone()
    return int(row[0]) if row else 0


def add_months_us(time_us: int, months: int) -> int:
    """The same instant ``months`` calendar months later (day clamped to the month's end)."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=time_us)
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return datetime_to_us(moment.replace(year=year, month=month, day=day))

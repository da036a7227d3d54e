"""Earning: a purchase at a partner credits the member a lot of points issued by that
partner, expiring per the coalition's policy; bonuses are earns with a reason code."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from coalition import accounts
from coalition.context import Coalition, Conn
from coalition.earning import points_for_purchase
from coalition.members import member_status, resolve_card
from coalition.outcomes import Earned, Refusal, RefusalCode
from coalition.partners import get_partner
from coalition.policy import add_months_us, earn_context, expiry_months, rolling_spend_minor
from coalition.tiers import TierPolicy
from ledger.requests import EntryRequest, PostingRequest
from ledger.units import AMOUNT_MAX, POINTS_UNIT, is_valid_unit

REASONS = ("welcome", "referral", "goodwill", "campaign")


def find_member(
    conn: Conn, partner_id: str, member_id: str | None, card_number: str | None
) -> str | Refusal:
    """The member a till names by coalition id or by the partner's card number."""
    named = _named_member(conn, partner_id, member_id, card_number)
    if isinstance(named, Refusal):
        return named
    return member_refusal(named, member_status(conn, named)) or named


def _named_member(
    conn: Conn, partner_id: str, member_id: str | None, card_number: str | None
) -> str | Refusal:
    if (member_id is None) == (card_number is None):
        return Refusal(RefusalCode.INVALID_REQUEST, "give exactly one of member id or card")
    if card_number is not None:
        found = resolve_card(conn, partner_id, card_number)
        if found is None:
            return Refusal(RefusalCode.UNKNOWN_MEMBER, "no member holds that card")
        return found
    assert member_id is not None
    return member_id


def member_refusal(member_id: str, status: str | None) -> Refusal | None:
    if status is None:
        return Refusal(RefusalCode.UNKNOWN_MEMBER, f"no member {member_id}")
    if status == "erased":
        return Refusal(RefusalCode.MEMBER_ERASED, f"member {member_id} was erased")
    if status != "active":
        return Refusal(RefusalCode.MEMBER_BLOCKED, f"member {member_id} is blocked")
    return None


def active_partner(conn: Conn, partner_id: str) -> Refusal | None:
    partner = get_partner(conn, partner_id)
    return partner_refusal(partner_id, None if partner is None else partner.status)


def partner_refusal(partner_id: str, status: str | None) -> Refusal | None:
    if status is None:
        return Refusal(RefusalCode.UNKNOWN_PARTNER, f"no partner {partner_id}")
    if status != "active":
        return Refusal(RefusalCode.PARTNER_SUSPENDED, f"partner {partner_id} is suspended")
    return None


RACE_RETRIES_MAX = 3


def earn_points(
    co: Coalition,
    conn: Conn,
    *,
    partner_id: str,
    ref_key: str,
    purchase_minor: int,
    currency: str,
    member_id: str | None = None,
    card_number: str | None = None,
    category: str | None = None,
) -> Earned | Refusal:
    """Price the purchase and append the earn; priced again if the rules changed between
    the reading and the append (the guard's BUSY), at most ``RACE_RETRIES_MAX`` times."""
    outcome: Earned | Refusal = Refusal(RefusalCode.BUSY, "not tried")
    for _ in range(RACE_RETRIES_MAX):
        outcome = _earn_points(
            co,
            conn,
            partner_id=partner_id,
            ref_key=ref_key,
            purchase_minor=purchase_minor,
            currency=currency,
            member_id=member_id,
            card_number=card_number,
            category=category,
        )
        if not (isinstance(outcome, Refusal) and outcome.code is RefusalCode.BUSY):
            return outcome
    return outcome


def _earn_points(
    co: Coalition,
    conn: Conn,
    *,
    partner_id: str,
    ref_key: str,
    purchase_minor: int,
    currency: str,
    member_id: str | None,
    card_number: str | None,
    category: str | None,
) -> Earned | Refusal:
    if type(purchase_minor) is not int or not 0 < purchase_minor <= AMOUNT_MAX:
        return Refusal(RefusalCode.INVALID_REQUEST, "purchase amount: a positive integer")
    if currency == POINTS_UNIT or not is_valid_unit(currency):
        return Refusal(RefusalCode.INVALID_REQUEST, "currency must be an ISO 4217 code")
    now_us = co.clock_us()
    named = _named_member(conn, partner_id, member_id, card_number)
    # What an earn depends on, read in one statement (a till waits for each round trip).
    in_force = earn_context(conn, partner_id, None if isinstance(named, Refusal) else named, now_us)
    refused = partner_refusal(partner_id, in_force.partner_status)
    if refused is not None:
        return refused
    if isinstance(named, Refusal):
        return named
    member = named
    refused = member_refusal(member, in_force.member_status)
    if refused is not None:
        return refused
    rules = in_force.rules
    if rules is None:
        return Refusal(RefusalCode.NO_EARNING_RULES, f"{partner_id} has no earning rules")
    version, rule = rules
    if currency != rule.currency:
        return Refusal(RefusalCode.CURRENCY_NOT_ACCEPTED, f"{partner_id} earns on {rule.currency}")
    tier_name, multiplier = _tier(conn, in_force.tier_policy, member, now_us)
    points = points_for_purchase(
        rule, purchase_minor, time_us=now_us, category=category, tier_multiplier=multiplier
    )
    inputs = {
        "member": member,
        "purchase_minor": purchase_minor,
        "currency": currency,
        "category": category,
    }
    meta = {
        "input": inputs,
        "partner": partner_id,
        "member": member,
        "ref": ref_key,
        "purchase_minor": purchase_minor,
        "currency": currency,
        "points": points,
        "tier": tier_name,
        "rules_version": version,
    }
    scope = f"partner:{partner_id}"
    months = in_force.expiry_months
    return _earn(co, conn, "earn", partner_id, scope, ref_key, member, points, meta, months)


def bonus_points(
    co: Coalition,
    conn: Conn,
    *,
    issuer: str,
    member_id: str,
    points: int,
    reason: str,
    ref_key: str,
) -> Earned | Refusal:
    """Points given for a reason (welcome, referral, goodwill) by a partner or the operator."""
    if reason not in REASONS:
        return Refusal(RefusalCode.INVALID_REQUEST, f"reason is one of {', '.join(REASONS)}")
    if type(points) is not int or not 0 < points <= AMOUNT_MAX:
        return Refusal(RefusalCode.INVALID_REQUEST, "points: a positive integer")
    if issuer != accounts.OPERATOR:
        refused = active_partner(conn, issuer)
        if refused is not None:
            return refused
    member = find_member(conn, issuer, member_id, None)
    if isinstance(member, Refusal):
        return member
    scope = "operator" if issuer == accounts.OPERATOR else f"partner:{issuer}"
    inputs = {"member": member, "points": points, "reason": reason}
    meta = {
        "input": inputs,
        "partner": issuer,
        "member": member,
        "ref": ref_key,
        "points": points,
        "reason": reason,
    }
    months = expiry_months(conn)
    return _earn(co, conn, "bonus", issuer, scope, ref_key, member, points, meta, months)


def _earn(
    co: Coalition,
    conn: Conn,
    kind: str,
    issuer: str,
    scope: str,
    ref_key: str,
    member: str,
    points: int,
    meta: dict[str, Any],
    months: int | None,  # the expiry policy: points stay spendable this long (None: always)
) -> Earned | Refusal:
    expires_us = None if months is None else add_months_us(co.clock_us(), months)
    postings: tuple[PostingRequest, ...] = ()
    if points:
        postings = (
            PostingRequest(accounts.issued(issuer), POINTS_UNIT, -points),
            PostingRequest(
                accounts.member(member),
                POINTS_UNIT,
                points,
                lot_origin=issuer,
                lot_expires_us=expires_us,
            ),
        )
    request = EntryRequest(kind, scope, ref_key, meta=meta, postings=postings)
    outcome = co.append_once(conn, request)
    if isinstance(outcome, Refusal):
        return outcome
    appended, stored = outcome
    return Earned(appended.seq, stored["points"], stored.get("tier"), appended.replayed)


def _tier(
    conn: Conn, policy: TierPolicy | None, member_id: str, now_us: int
) -> tuple[str | None, Decimal]:
    if policy is None:
        return None, Decimal(1)
    spend = rolling_spend_minor(conn, member_id, policy.currency, now_us - policy.window_us, now_us)
    tier = policy.tier_for(spend)
    return (None, Decimal(1)) if tier is None else (tier.name, tier.multiplier)

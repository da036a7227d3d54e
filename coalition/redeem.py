"""Spending points at a partner: directly, or authorise → capture (whole or part) → void.

The ledger takes the member's lots first-expiring-first and records them, so the issuer
of every redeemed point is known; a hold reserves points until captured, voided or timed
out. Two tills racing for the same last points: the chain-head lock lets exactly one win.
"""

from __future__ import annotations

from typing import Any

from coalition import accounts
from coalition.context import Coalition, Conn, stored_entry
from coalition.earn import active_partner, find_member
from coalition.hold_timeout import timed_out
from coalition.outcomes import Authorised, Redeemed, Refusal, RefusalCode, Voided
from ledger import reads
from ledger.requests import EntryRequest, HoldRequest, PostingRequest
from ledger.timefmt import parse_time_us
from ledger.units import AMOUNT_MAX, POINTS_UNIT

HOLD_SECONDS_DEFAULT = 15 * 60
HOLD_SECONDS_MAX = 7 * 24 * 3600


def redeem_points(
    co: Coalition,
    conn: Conn,
    *,
    partner_id: str,
    ref_key: str,
    points: int,
    member_id: str | None = None,
    card_number: str | None = None,
) -> Redeemed | Refusal:
    checked = check_spend(conn, partner_id, points, member_id, card_number)
    if isinstance(checked, Refusal):
        return checked
    member = checked
    request = redemption_request(partner_id, ref_key, member, points)
    return _redeemed(co, conn, request, member, points)


def redemption_request(partner_id: str, ref_key: str, member: str, points: int) -> EntryRequest:
    meta = {
        "input": {"member": member, "points": points},
        "partner": partner_id,
        "member": member,
        "ref": ref_key,
        "points": points,
    }
    return EntryRequest(
        "redeem",
        f"partner:{partner_id}",
        ref_key,
        meta=meta,
        postings=_spend(member, partner_id, points),
    )


def authorise(
    co: Coalition,
    conn: Conn,
    *,
    partner_id: str,
    ref_key: str,
    points: int,
    member_id: str | None = None,
    card_number: str | None = None,
    hold_seconds: int = HOLD_SECONDS_DEFAULT,
) -> Authorised | Refusal:
    if type(hold_seconds) is not int or not 1 <= hold_seconds <= HOLD_SECONDS_MAX:
        return Refusal(RefusalCode.INVALID_REQUEST, f"hold lasts 1–{HOLD_SECONDS_MAX} seconds")
    checked = check_spend(conn, partner_id, points, member_id, card_number)
    if isinstance(checked, Refusal):
        return checked
    member = checked
    expires_us = co.clock_us() + hold_seconds * 1_000_000
    meta = {
        "input": {"member": member, "points": points, "hold_seconds": hold_seconds},
        "partner": partner_id,
        "member": member,
        "ref": ref_key,
        "points": points,
    }
    request = EntryRequest(
        "authorise",
        f"partner:{partner_id}",
        ref_key,
        meta=meta,
        hold=HoldRequest(accounts.member(member), POINTS_UNIT, points, expires_us),
    )
    outcome = co.append_once(conn, request)
    if isinstance(outcome, Refusal):
        return explain_shortfall(conn, outcome, member, points, co.clock_us())
    appended, _ = outcome
    entry = stored_entry(conn, appended.seq)
    return Authorised(
        appended.seq, points, parse_time_us(entry["hold"]["expires"]), appended.replayed
    )


def capture(
    co: Coalition,
    conn: Conn,
    *,
    partner_id: str,
    ref_key: str,
    hold_seq: int,
    points: int,
) -> Redeemed | Refusal:
    hold = _own_hold(conn, partner_id, hold_seq)
    if isinstance(hold, Refusal):
        return hold
    if type(points) is not int or points <= 0:
        return Refusal(RefusalCode.INVALID_REQUEST, "points: a positive integer")
    refused = active_partner(conn, partner_id)
    if refused is not None:
        return refused
    if timed_out(conn, hold_seq):
        return Refusal(RefusalCode.HOLD_EXPIRED, f"hold {hold_seq} has expired")
    member = hold["member"]
    meta = {
        "input": {"hold": hold_seq, "points": points},
        "partner": partner_id,
        "member": member,
        "ref": ref_key,
        "points": points,
        "hold": hold_seq,
    }
    request = EntryRequest(
        "capture",
        f"partner:{partner_id}",
        ref_key,
        meta=meta,
        capture_hold_seq=hold_seq,
        capture_amount=points,
        postings=_spend(member, partner_id, points),
    )
    return _redeemed(co, conn, request, member, points)


def void(
    co: Coalition, conn: Conn, *, partner_id: str, ref_key: str, hold_seq: int
) -> Voided | Refusal:
    hold = _own_hold(conn, partner_id, hold_seq)
    if isinstance(hold, Refusal):
        return hold
    meta = {
        "input": {"hold": hold_seq},
        "partner": partner_id,
        "member": hold["member"],
        "ref": ref_key,
        "hold": hold_seq,
    }
    request = EntryRequest(
        "void_hold", f"partner:{partner_id}", ref_key, meta=meta, void_hold_seq=hold_seq
    )
    outcome = co.append_once(conn, request)
    if isinstance(outcome, Refusal):
        return outcome
    appended, _ = outcome
    return Voided(appended.seq, appended.replayed)


def check_spend(
    conn: Conn, partner_id: str, points: int, member_id: str | None, card_number: str | None
) -> str | Refusal:
    """The member a spend would debit, or what it is refused before its append (a quote
    asks the same)."""
    if type(points) is not int or not 0 < points <= AMOUNT_MAX:
        return Refusal(RefusalCode.INVALID_REQUEST, "points: a positive integer")
    refused = active_partner(conn, partner_id)
    if refused is not None:
        return refused
    return find_member(conn, partner_id, member_id, card_number)


def _spend(member: str, partner_id: str, points: int) -> tuple[PostingRequest, ...]:
    return (
        PostingRequest(accounts.member(member), POINTS_UNIT, -points),
        PostingRequest(accounts.redeemed(partner_id), POINTS_UNIT, points),
    )


def _own_hold(conn: Conn, partner_id: str, hold_seq: int) -> dict[str, Any] | Refusal:
    """The hold's recorded metadata — only if this partner placed it (else: unknown)."""
    stored = reads.entry(conn, hold_seq) if type(hold_seq) is int and hold_seq >= 0 else None
    if stored is None or stored.kind != "authorise" or stored.ref_scope != f"partner:{partner_id}":
        return Refusal(RefusalCode.UNKNOWN_HOLD, f"no hold {hold_seq} placed by {partner_id}")
    meta: dict[str, Any] = stored_entry(conn, hold_seq)["meta"]
    return meta


def _redeemed(
    co: Coalition, conn: Conn, request: EntryRequest, member: str, points: int
) -> Redeemed | Refusal:
    outcome = co.append_once(conn, request)
    if isinstance(outcome, Refusal):
        return explain_shortfall(conn, outcome, member, points, co.clock_us())
    appended, stored_meta = outcome
    by_issuer = issuers_of(conn, appended.seq)
    return Redeemed(appended.seq, stored_meta["points"], by_issuer, appended.replayed)


def issuers_of(conn: Conn, seq: int) -> dict[str, int]:
    rows = conn.execute(
        "SELECT origin, points FROM coalition_lot_use WHERE seq = %s ORDER BY origin", (seq,)
    ).fetchall()
    return {str(origin): int(points) for origin, points in rows}


def explain_shortfall(
    conn: Conn, refusal: Refusal, member: str, points: int, now_us: int
) -> Refusal:
    """Say 'expired' when the member would have had enough but for points past expiry."""
    if refusal.code is not RefusalCode.INSUFFICIENT_POINTS:
        return refusal
    lots = reads.lots(conn, accounts.member(member))
    unexpired = sum(lot.remaining for lot in lots if not lot.is_expired(now_us))
    if unexpired < points <= sum(lot.remaining for lot in lots):
        return Refusal(RefusalCode.POINTS_EXPIRED, "the member's points needed have expired")
    return refusal

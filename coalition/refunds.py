"""Refunds: of a purchase (claw back the points it earned) and of a redemption (give the
points back to the very lots they came from, with their original expiry).

A purchase refund takes points from the earn's own lot first, then from the member's
other lots first-expiring-first; points the member has already spent become a debt
(the declared policy) that the member's next earns repay first — nothing is lost and
nothing is minted. Clawbacks are cumulative: after refunds totalling R of a purchase P
that earned N points, exactly floor(N·R/P) points have been clawed back, so a full
refund in any number of parts takes back exactly N.
"""

from __future__ import annotations

from typing import Any

from coalition import accounts
from coalition.clawback import clawback_postings
from coalition.context import Coalition, Conn, stored_entry
from coalition.outcomes import Refunded, Refusal, RefusalCode
from ledger import reads
from ledger.requests import EntryRequest, LotTake, PostingRequest
from ledger.units import POINTS_UNIT

RACE_RETRIES_MAX = 3


def refund_purchase(
    co: Coalition,
    conn: Conn,
    *,
    partner_id: str,
    ref_key: str,
    earn_ref_key: str,
    refund_minor: int,
) -> Refunded | Refusal:
    inputs = {"earn_ref": earn_ref_key, "refund_minor": refund_minor}
    if type(refund_minor) is not int or refund_minor <= 0:
        return Refusal(RefusalCode.INVALID_REQUEST, "refund amount: a positive integer")
    for _ in range(RACE_RETRIES_MAX):
        row = conn.execute(
            "SELECT earn_seq, member_id, purchase_minor, points, refunded_minor,"
            " clawed_back_points FROM coalition_earn WHERE partner_id = %s AND ref_key = %s",
            (partner_id, earn_ref_key),
        ).fetchone()
        if row is None:
            return Refusal(
                RefusalCode.UNKNOWN_TRANSACTION, f"no earn {earn_ref_key} at {partner_id}"
            )
        earn_seq, member, purchase_minor, points, refunded_minor, clawed_back = row
        earlier = _earlier_answer(conn, partner_id, ref_key, "refund_earn", inputs)
        if earlier is not None:
            return earlier
        # Read before the append, so judged again inside it (coalition.guards, and the
        # ledger's bound on corrections): this early answer only spares the queue.
        if refunded_minor + refund_minor > purchase_minor:
            return Refusal(
                RefusalCode.REFUND_EXCEEDS_ORIGINAL,
                f"{purchase_minor - refunded_minor} of the purchase is left to refund",
            )
        # Integer floor division: exact at any size (a Decimal quotient rounds at 28 digits).
        due_after = points * (refunded_minor + refund_minor) // purchase_minor
        clawback = due_after - clawed_back
        postings, debt = _clawback_postings(
            conn, member, earn_seq, partner_id, clawback, co.clock_us()
        )
        meta = {
            "input": inputs,
            "partner": partner_id,
            "member": member,
            "ref": ref_key,
            "earn_seq": earn_seq,
            "refund_minor": refund_minor,
            "points": clawback,
            "debt_points": debt,
        }
        request = EntryRequest(
            "refund_earn",
            f"partner:{partner_id}",
            ref_key,
            meta=meta,
            corrects_seq=earn_seq,
            postings=postings,
        )
        outcome = co.append_once(conn, request)
        if isinstance(outcome, Refusal) and outcome.code is RefusalCode.BUSY:
            continue  # a concurrent refund or spend changed what we read: choose again
        if isinstance(outcome, Refusal):
            return outcome
        appended, stored = outcome
        return Refunded(appended.seq, stored["points"], stored["debt_points"], appended.replayed)
    return Refusal(RefusalCode.BUSY, "the purchase or the member's lots kept changing; retry")


def _clawback_postings(
    conn: Conn, member: str, earn_seq: int, partner_id: str, points: int, now_us: int
) -> tuple[tuple[PostingRequest, ...], int]:
    lots = reads.lots(conn, accounts.member(member)) if points else []
    return clawback_postings(lots, member, earn_seq, partner_id, points, now_us)


def refund_redemption(
    co: Coalition,
    conn: Conn,
    *,
    partner_id: str,
    ref_key: str,
    redemption_ref_key: str,
    points: int,
) -> Refunded | Refusal:
    inputs = {"redemption_ref": redemption_ref_key, "points": points}
    if type(points) is not int or points <= 0:
        return Refusal(RefusalCode.INVALID_REQUEST, "points: a positive integer")
    for _ in range(RACE_RETRIES_MAX):
        row = conn.execute(
            "SELECT redemption_seq, member_id, points, refunded_points FROM coalition_redemption"
            " WHERE partner_id = %s AND ref_key = %s",
            (partner_id, redemption_ref_key),
        ).fetchone()
        if row is None:
            return Refusal(
                RefusalCode.UNKNOWN_TRANSACTION,
                f"no redemption {redemption_ref_key} at {partner_id}",
            )
        redemption_seq, member, redeemed_points, refunded_points = row
        earlier = _earlier_answer(conn, partner_id, ref_key, "refund_redemption", inputs)
        if earlier is not None:
            return earlier
        # Read before the append, so judged again inside it (coalition.guards, and the
        # ledger's bound on corrections): this early answer only spares the queue.
        if refunded_points + points > redeemed_points:
            return Refusal(
                RefusalCode.REFUND_EXCEEDS_ORIGINAL,
                f"{redeemed_points - refunded_points} points are left to refund",
            )
        takes = _restore_takes(conn, redemption_seq, member, refunded_points, points)
        meta = {
            "input": inputs,
            "partner": partner_id,
            "member": member,
            "ref": ref_key,
            "redemption_seq": redemption_seq,
            "points": points,
            "debt_points": 0,
            "refunded_points_before": refunded_points,  # the lots chosen depend on it
        }
        request = EntryRequest(
            "refund_redemption",
            f"partner:{partner_id}",
            ref_key,
            meta=meta,
            corrects_seq=redemption_seq,
            postings=(
                PostingRequest(accounts.redeemed(partner_id), POINTS_UNIT, -points),
                PostingRequest(accounts.member(member), POINTS_UNIT, points, lots=takes),
            ),
        )
        outcome = co.append_once(conn, request)
        if isinstance(outcome, Refusal) and outcome.code is RefusalCode.BUSY:
            continue  # another refund of it came first: read again and choose again
        if isinstance(outcome, Refusal):
            return outcome
        appended, stored = outcome
        return Refunded(appended.seq, stored["points"], 0, appended.replayed)
    return Refusal(RefusalCode.BUSY, "other refunds of this redemption kept coming; retry")


def _restore_takes(
    conn: Conn, redemption_seq: int, member: str, already_refunded: int, points: int
) -> tuple[LotTake, ...]:
    """Give back to the lots the redemption took, last-taken first, skipping what earlier
    partial refunds already gave back — the same split every time for the same history."""
    entry = stored_entry(conn, redemption_seq)
    taken: list[tuple[str, int]] = []
    for posting in entry["postings"]:
        if posting["account"] == accounts.member(member):
            taken += [(t["lot"], t["amount"]) for t in posting.get("lots", [])]
    skip, wanted, takes = already_refunded, points, []
    for lot_id, amount in reversed(taken):
        usable = amount - min(amount, skip)
        skip -= amount - usable
        give = min(usable, wanted)
        if give:
            takes.append(LotTake(lot_id, give))
            wanted -= give
        if wanted == 0:
            break
    assert wanted == 0, "a redemption cannot give back more than it took"
    return tuple(takes)


def _earlier_answer(
    conn: Conn, partner_id: str, ref_key: str, kind: str, inputs: dict[str, Any]
) -> Refunded | Refusal | None:
    """A retried refund gets its first answer, before limits that it has itself used up."""
    stored = reads.entry_by_ref(conn, f"partner:{partner_id}", ref_key)
    if stored is None:
        return None
    meta = stored_entry(conn, stored.seq)["meta"]
    if stored.kind != kind or meta.get("input") != inputs:
        return Refusal(RefusalCode.DUPLICATE_REFERENCE, f"reference {ref_key} was used before")
    return Refunded(stored.seq, meta["points"], meta.get("debt_points", 0), replayed=True)

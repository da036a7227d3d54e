"""Members: a coalition-wide id, partner cards that resolve to it, and a status."""

from __future__ import annotations

from coalition import accounts
from coalition.context import Coalition, Conn
from coalition.outcomes import Recorded, Refusal, RefusalCode
from coalition.partners import OPERATOR_SCOPE, _recorded, get_partner
from ledger.requests import EntryRequest

CARD_LENGTH_MAX = 64


def member_status(conn: Conn, member_id: str) -> str | None:
    row = conn.execute(
        "SELECT status FROM coalition_member WHERE member_id = %s", (member_id,)
    ).fetchone()
    return None if row is None else str(row[0])


def resolve_card(conn: Conn, partner_id: str, card_number: str) -> str | None:
    row = conn.execute(
        "SELECT member_id FROM coalition_card WHERE partner_id = %s AND card_number = %s",
        (partner_id, card_number),
    ).fetchone()
    return None if row is None else str(row[0])


def enroll_member(co: Coalition, conn: Conn, member_id: str) -> Recorded | Refusal:
    if not accounts.is_member_id(member_id):
        return Refusal(RefusalCode.INVALID_REQUEST, "member id: 1–64 of A-Z, a-z, 0-9, _ and -")
    request = EntryRequest(
        "member_enrolled",
        OPERATOR_SCOPE,
        f"member:{member_id}",
        meta={"member": member_id},
        open_accounts=(accounts.member_account(member_id),),
    )
    return _recorded(co.append(conn, request))


def link_card(
    co: Coalition, conn: Conn, member_id: str, partner_id: str, card_number: str
) -> Recorded | Refusal:
    if not card_number or len(card_number) > CARD_LENGTH_MAX or not card_number.isprintable():
        return Refusal(RefusalCode.INVALID_REQUEST, f"card number: 1–{CARD_LENGTH_MAX} characters")
    if member_status(conn, member_id) is None:
        return Refusal(RefusalCode.UNKNOWN_MEMBER, f"no member {member_id}")
    if get_partner(conn, partner_id) is None:
        return Refusal(RefusalCode.UNKNOWN_PARTNER, f"no partner {partner_id}")
    holder = resolve_card(conn, partner_id, card_number)
    if holder is not None and holder != member_id:
        return Refusal(RefusalCode.CARD_TAKEN, "that card belongs to another member")
    request = EntryRequest(
        "card_linked",
        f"partner:{partner_id}",
        f"card:{card_number}",
        meta={"member": member_id, "partner": partner_id, "card": card_number},
    )
    return _recorded(co.append(conn, request))


def set_member_status(
    co: Coalition, conn: Conn, member_id: str, status: str, ref_key: str
) -> Recorded | Refusal:
    if status not in ("active", "blocked"):
        return Refusal(RefusalCode.INVALID_REQUEST, "status is active or blocked")
    if member_status(conn, member_id) is None:
        return Refusal(RefusalCode.UNKNOWN_MEMBER, f"no member {member_id}")
    request = EntryRequest(
        "member_status", OPERATOR_SCOPE, ref_key, meta={"member": member_id, "status": status}
    )
    return _recorded(co.append(conn, request))

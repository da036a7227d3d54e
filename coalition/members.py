"""Members: a coalition-wide id, partner cards that resolve to it, a status, erasure.

A card number never reaches the journal: ``card_linked`` carries a pseudonym keyed by
the member's secret, and the till's lookup is a keyed index beside the journal
(``coalition.privacy``; docs/PRIVACY.md). Erasure deletes both and records that it did.
"""

from __future__ import annotations

import psycopg

from coalition import accounts
from coalition.context import Coalition, Conn
from coalition.outcomes import Recorded, Refusal, RefusalCode
from coalition.partners import OPERATOR_SCOPE, _recorded, get_partner
from coalition.privacy import card_index_key, card_pseudonym, index_key, member_secret_for_write
from coalition.privacy import resolve_card as resolve_card
from ledger.requests import EntryRequest

CARD_LENGTH_MAX = 64
REFERENCE_LENGTH_MAX = 128


def member_status(conn: Conn, member_id: str) -> str | None:
    row = conn.execute(
        "SELECT status FROM coalition_member WHERE member_id = %s", (member_id,)
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
    """Link a partner's card to a member: the card index row and the ``card_linked``
    entry (carrying only the card's pseudonym) in one transaction, or neither.

    The index's unique key (partner, keyed card hash) decides, in this transaction, that
    a card belongs to one member: a concurrent link of the same card waits for ours and
    is then refused ``CARD_TAKEN``. ``co`` must append on ``conn``: a group-committed
    coalition refuses, by assertion, to append inside this transaction."""
    if not card_number or len(card_number) > CARD_LENGTH_MAX or not card_number.isprintable():
        return Refusal(RefusalCode.INVALID_REQUEST, f"card number: 1–{CARD_LENGTH_MAX} characters")
    status = member_status(conn, member_id)
    if status is None:
        return Refusal(RefusalCode.UNKNOWN_MEMBER, f"no member {member_id}")
    if status == "erased":
        return Refusal(RefusalCode.MEMBER_ERASED, f"member {member_id} was erased")
    if get_partner(conn, partner_id) is None:
        return Refusal(RefusalCode.UNKNOWN_PARTNER, f"no partner {partner_id}")
    outcome: Recorded | Refusal = Refusal(RefusalCode.BUSY, "not tried")
    with conn.transaction():
        key = card_index_key(index_key(conn), partner_id, card_number)
        row = conn.execute(
            "INSERT INTO coalition_card_index VALUES (%s, %s, %s)"
            " ON CONFLICT (partner_id, card_key) DO NOTHING RETURNING member_id",
            (partner_id, key, member_id),
        ).fetchone()
        if row is None:
            holder = conn.execute(
                "SELECT member_id FROM coalition_card_index WHERE partner_id = %s"
                " AND card_key = %s",
                (partner_id, key),
            ).fetchone()
            if holder is None or holder[0] != member_id:
                outcome = Refusal(RefusalCode.CARD_TAKEN, "that card belongs to another member")
                raise psycopg.Rollback()
        secret = member_secret_for_write(conn, member_id)
        pseudonym = card_pseudonym(secret, partner_id, card_number)
        request = EntryRequest(
            "card_linked",
            f"partner:{partner_id}",
            f"card:{pseudonym}",
            meta={"member": member_id, "partner": partner_id, "card_pseudonym": pseudonym},
        )
        outcome = _recorded(co.append(conn, request))
        if isinstance(outcome, Refusal):  # an erasure that committed first, say
            raise psycopg.Rollback()
    return outcome


def erase_member(co: Coalition, conn: Conn, member_id: str, ref_key: str) -> Recorded | Refusal:
    """Erase a member's personal data (GDPR art. 17, 152-FZ art. 21): append
    ``member_erased`` (the member id, nothing personal), then, in the same transaction
    and under the chain's lock that append took, delete the member's secret and card
    index rows. Afterwards no card can be named for the member and no pseudonym in the
    journal can be tied to a card. The member's account, its entries and any points
    left stay (money and settlement need them); the points expire as usual.

    A retry with the same reference answers the original ``Recorded`` (``replayed``);
    erasing again under another reference is ``MEMBER_ERASED``. ``co`` must append on
    ``conn`` (not group-committed)."""
    if not accounts.is_member_id(member_id):
        return Refusal(RefusalCode.INVALID_REQUEST, "member id: 1–64 of A-Z, a-z, 0-9, _ and -")
    if not ref_key or len(ref_key) > REFERENCE_LENGTH_MAX or not ref_key.isprintable():
        return Refusal(
            RefusalCode.INVALID_REQUEST, f"reference: 1–{REFERENCE_LENGTH_MAX} printable characters"
        )
    if member_status(conn, member_id) is None:
        return Refusal(RefusalCode.UNKNOWN_MEMBER, f"no member {member_id}")
    outcome: Recorded | Refusal = Refusal(RefusalCode.BUSY, "not tried")
    with conn.transaction():
        request = EntryRequest("member_erased", OPERATOR_SCOPE, ref_key, meta={"member": member_id})
        outcome = _recorded(co.append(conn, request))
        if isinstance(outcome, Refusal):
            raise psycopg.Rollback()
        # After the append: the chain's lock is ours until commit, so every link of a
        # card to this member either committed before (and is deleted here) or comes
        # after, and is refused by the guard (the member is erased).
        conn.execute("DELETE FROM coalition_card_index WHERE member_id = %s", (member_id,))
        conn.execute("DELETE FROM coalition_member_secret WHERE member_id = %s", (member_id,))
    return outcome


def set_member_status(
    co: Coalition, conn: Conn, member_id: str, status: str, ref_key: str
) -> Recorded | Refusal:
    if status not in ("active", "blocked"):
        return Refusal(RefusalCode.INVALID_REQUEST, "status is active or blocked")
    current = member_status(conn, member_id)
    if current is None:
        return Refusal(RefusalCode.UNKNOWN_MEMBER, f"no member {member_id}")
    if current == "erased":
        return Refusal(RefusalCode.MEMBER_ERASED, f"member {member_id} was erased")
    request = EntryRequest(
        "member_status", OPERATOR_SCOPE, ref_key, meta={"member": member_id, "status": status}
    )
    return _recorded(co.append(conn, request))

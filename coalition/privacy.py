"""Keyed pseudonyms: how a card number (or any identifier of a person) is named in the
journal without being written there, and the keys that live outside it.

- A member's **secret** (32 random bytes, ``coalition_member_secret``) keys the
  pseudonyms that journal entries carry: ``card_pseudonym`` is
  HMAC-SHA256(secret, "card\\n" ‖ partner ‖ "\\n" ‖ card number), in lowercase hex. Deleting the
  secret (erasure) leaves the pseudonyms in the chain, and nobody can tell which card
  one stands for any more, not even with the card in hand.
- The till's **card index** (``coalition_card_index``) maps a keyed hash of (partner,
  card number) under the coalition-wide key ``coalition_pii_key.card_index`` to the
  member. It is a mutable table, never in the journal; erasure deletes the member's rows.

FORMAT.md §13 is the normative description of the journal side.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from coalition.context import Conn

SECRET_BYTES = 32


def card_pseudonym(secret: bytes, partner_id: str, card_number: str) -> str:
    """The member-keyed pseudonym of a card, as ``card_linked`` entries carry it."""
    message = f"card\n{partner_id}\n{card_number}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def card_index_key(index_key: bytes, partner_id: str, card_number: str) -> bytes:
    """The till's lookup key for a card (see migration 0009, which computes the same)."""
    message = f"card-index\n{partner_id}\n{card_number}".encode()
    return hmac.new(index_key, message, hashlib.sha256).digest()


def index_key(conn: Conn) -> bytes:
    row = conn.execute("SELECT key FROM coalition_pii_key WHERE name = 'card_index'").fetchone()
    assert row is not None, "migration 0009 makes the card index key"
    return bytes(row[0])


def member_secret(conn: Conn, member_id: str) -> bytes | None:
    row = conn.execute(
        "SELECT secret FROM coalition_member_secret WHERE member_id = %s", (member_id,)
    ).fetchone()
    return None if row is None else bytes(row[0])


def member_secret_for_write(conn: Conn, member_id: str) -> bytes:
    """The member's secret, made now if the member has none yet. Call inside the
    transaction that uses it: if that transaction rolls back, so does a new secret."""
    conn.execute(
        "INSERT INTO coalition_member_secret VALUES (%s, %s) ON CONFLICT (member_id) DO NOTHING",
        (member_id, os.urandom(SECRET_BYTES)),
    )
    secret = member_secret(conn, member_id)
    assert secret is not None, "just made, or made by a transaction that committed first"
    return secret


def resolve_card(conn: Conn, partner_id: str, card_number: str) -> str | None:
    """The member holding this partner's card, by the card index."""
    key = card_index_key(index_key(conn), partner_id, card_number)
    row = conn.execute(
        "SELECT member_id FROM coalition_card_index WHERE partner_id = %s AND card_key = %s",
        (partner_id, key),
    ).fetchone()
    return None if row is None else str(row[0])

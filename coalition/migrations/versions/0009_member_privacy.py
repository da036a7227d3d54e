"""Personal data out of the journal (docs/PRIVACY.md).

- ``coalition_member_secret``: one random 32-byte secret per member, the HMAC key of the
  pseudonyms that new journal entries carry instead of card numbers. Never in the
  journal; deleted when the member is erased, after which no pseudonym can be linked to
  a card again.
- ``coalition_pii_key``: the coalition-wide key of the till's card index (one row,
  ``card_index``), made here from the operating system's random source.
- ``coalition_card_index``: the till's lookup (partner, keyed hash of the card number) →
  member. Written by the card-linking use case, not by the journal's projection (the
  journal no longer holds the card number it would need); deleted on erasure. The
  unique key makes a card belong to at most one member, judged in the linking
  transaction.
- ``coalition_card`` (card numbers in clear, derived from old ``card_linked`` entries)
  is moved into the index and dropped.
- ``coalition_member.status`` may be ``erased``.

These three tables are the only ones the application role may DELETE from.

Revision ID: 0009
Revises: 0008
"""

import hashlib
import hmac
import os

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SCHEMA = """
CREATE TABLE coalition_member_secret (
    member_id text PRIMARY KEY REFERENCES coalition_member (member_id),
    secret bytea NOT NULL CHECK (octet_length(secret) = 32)
);

CREATE TABLE coalition_pii_key (
    name text PRIMARY KEY,
    key bytea NOT NULL CHECK (octet_length(key) = 32)
);

CREATE TABLE coalition_card_index (
    partner_id text NOT NULL REFERENCES coalition_partner (partner_id),
    card_key bytea NOT NULL CHECK (octet_length(card_key) = 32),
    member_id text NOT NULL REFERENCES coalition_member (member_id),
    PRIMARY KEY (partner_id, card_key)
);
CREATE INDEX coalition_card_index_member ON coalition_card_index (member_id);

ALTER TABLE coalition_member DROP CONSTRAINT coalition_member_status_check;
ALTER TABLE coalition_member ADD CONSTRAINT coalition_member_status_check
    CHECK (status IN ('active', 'blocked', 'erased'));
"""

PRIVATE_TABLES = ("coalition_member_secret", "coalition_pii_key", "coalition_card_index")


def _card_key(index_key: bytes, partner_id: str, card_number: str) -> bytes:
    # The same computation as coalition.privacy.card_index_key (kept here so that this
    # migration means the same thing whatever the code becomes).
    message = f"card-index\n{partner_id}\n{card_number}".encode()
    return hmac.new(index_key, message, hashlib.sha256).digest()


def upgrade() -> None:
    op.execute(SCHEMA)
    bind = op.get_bind()
    index_key = os.urandom(32)
    bind.execute(
        sa.text("INSERT INTO coalition_pii_key VALUES ('card_index', :key)"), {"key": index_key}
    )
    rows = bind.execute(
        sa.text("SELECT partner_id, card_number, member_id FROM coalition_card")
    ).fetchall()
    for partner_id, card_number, member_id in rows:
        bind.execute(
            sa.text("INSERT INTO coalition_card_index VALUES (:p, :k, :m)"),
            {"p": partner_id, "k": _card_key(index_key, partner_id, card_number), "m": member_id},
        )
    op.execute("DROP TABLE coalition_card")
    for table in PRIVATE_TABLES:
        op.execute(f"GRANT SELECT, INSERT, DELETE ON {table} TO coalition_app")


def downgrade() -> None:
    raise NotImplementedError("card numbers hashed here cannot be restored")

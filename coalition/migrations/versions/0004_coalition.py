"""Coalition read models: partners, terms, earning rules, policy, members, cards, earns.

Every row here is derived from journal entries (written in the same transaction by the
journal's after_append hook) and can be rebuilt by replaying the journal; the journal,
not these tables, is the record.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = """
CREATE TABLE coalition_partner (
    partner_id text PRIMARY KEY,
    legal_name text NOT NULL,
    settlement_currency text NOT NULL,
    status text NOT NULL CHECK (status IN ('active', 'suspended')),
    onboarded_seq bigint NOT NULL
);

CREATE TABLE coalition_terms (
    partner_id text NOT NULL REFERENCES coalition_partner (partner_id),
    version integer NOT NULL,
    effective_from_us bigint NOT NULL,
    terms jsonb NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (partner_id, version)
);

CREATE TABLE coalition_earning_rules (
    partner_id text NOT NULL REFERENCES coalition_partner (partner_id),
    version integer NOT NULL,
    effective_from_us bigint NOT NULL,
    rules jsonb NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (partner_id, version)
);

CREATE TABLE coalition_policy (
    name text PRIMARY KEY,
    policy jsonb NOT NULL,
    seq bigint NOT NULL
);

CREATE TABLE coalition_member (
    member_id text PRIMARY KEY,
    status text NOT NULL CHECK (status IN ('active', 'blocked')),
    enrolled_seq bigint NOT NULL
);

CREATE TABLE coalition_card (
    partner_id text NOT NULL REFERENCES coalition_partner (partner_id),
    card_number text NOT NULL,
    member_id text NOT NULL REFERENCES coalition_member (member_id),
    linked_seq bigint NOT NULL,
    PRIMARY KEY (partner_id, card_number)
);

CREATE TABLE coalition_earn (
    earn_seq bigint PRIMARY KEY,
    partner_id text NOT NULL,
    ref_key text NOT NULL,
    member_id text NOT NULL,
    purchase_minor bigint NOT NULL,
    currency text NOT NULL,
    points bigint NOT NULL,
    time_us bigint NOT NULL,
    refunded_minor bigint NOT NULL DEFAULT 0,
    clawed_back_points bigint NOT NULL DEFAULT 0,
    UNIQUE (partner_id, ref_key)
);
CREATE INDEX coalition_earn_member_time ON coalition_earn (member_id, time_us);
CREATE INDEX coalition_earn_time ON coalition_earn (time_us);

CREATE TABLE coalition_redemption (
    redemption_seq bigint PRIMARY KEY,
    partner_id text NOT NULL,
    ref_key text NOT NULL,
    member_id text NOT NULL,
    points bigint NOT NULL,
    time_us bigint NOT NULL,
    refunded_points bigint NOT NULL DEFAULT 0,
    UNIQUE (partner_id, ref_key)
);
CREATE INDEX coalition_redemption_time ON coalition_redemption (time_us);

-- Which issuers' points each redemption, refund or expiry moved (from the lots it took).
CREATE TABLE coalition_lot_use (
    seq bigint NOT NULL,
    kind text NOT NULL,
    partner_id text NOT NULL,
    origin text NOT NULL,
    points bigint NOT NULL,
    time_us bigint NOT NULL,
    PRIMARY KEY (seq, origin)
);
CREATE INDEX coalition_lot_use_time ON coalition_lot_use (time_us);
"""

TABLES = (
    "coalition_partner",
    "coalition_terms",
    "coalition_earning_rules",
    "coalition_policy",
    "coalition_member",
    "coalition_card",
    "coalition_earn",
    "coalition_redemption",
    "coalition_lot_use",
)


def upgrade() -> None:
    op.execute(SCHEMA)
    for table in TABLES:
        op.execute(f"GRANT SELECT, INSERT, UPDATE ON {table} TO coalition_app")


def downgrade() -> None:
    raise NotImplementedError("read models are rebuilt from the journal, never migrated down")

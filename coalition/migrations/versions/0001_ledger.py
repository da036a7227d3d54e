"""Ledger tables: the chain head, entries, postings, accounts, balances, lots, holds, Merkle nodes.

Journal tables (entries, postings, accounts, Merkle nodes) are append-only: triggers
refuse UPDATE, DELETE and TRUNCATE. Balances, lot remainders, holds and the chain head
are derived state, kept current for fast reads and re-derivable by replaying the journal.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY_TABLES = ("ledger_entry", "ledger_posting", "ledger_account", "ledger_merkle_node")

SCHEMA = """
CREATE TABLE ledger_chain (
    chain_id text PRIMARY KEY,
    tree_size bigint NOT NULL CHECK (tree_size >= 0),
    head_leaf_hash bytea NOT NULL CHECK (length(head_leaf_hash) = 32),
    last_time_us bigint NOT NULL,
    frontier_hashes bytea[] NOT NULL
);

CREATE TABLE ledger_entry (
    chain_id text NOT NULL,
    seq bigint NOT NULL CHECK (seq >= 0),
    time_us bigint NOT NULL,
    kind text NOT NULL,
    ref_scope text NOT NULL,
    ref_key text NOT NULL,
    request_hash bytea NOT NULL,
    canonical bytea NOT NULL,
    leaf_hash bytea NOT NULL CHECK (length(leaf_hash) = 32),
    corrects_seq bigint,
    PRIMARY KEY (chain_id, seq),
    UNIQUE (ref_scope, ref_key)
);
CREATE INDEX ledger_entry_time ON ledger_entry (chain_id, time_us, seq);
CREATE INDEX ledger_entry_kind ON ledger_entry (kind, seq);

CREATE TABLE ledger_account (
    account text PRIMARY KEY,
    unit text NOT NULL,
    overdraft boolean NOT NULL,
    lot_tracked boolean NOT NULL,
    opened_seq bigint NOT NULL
);

CREATE TABLE ledger_posting (
    chain_id text NOT NULL,
    seq bigint NOT NULL,
    posting_index integer NOT NULL,
    account text NOT NULL REFERENCES ledger_account (account),
    unit text NOT NULL,
    amount bigint NOT NULL CHECK (amount <> 0),
    balance_after bigint NOT NULL,
    PRIMARY KEY (chain_id, seq, posting_index)
);
CREATE INDEX ledger_posting_account ON ledger_posting (account, seq);

CREATE TABLE ledger_balance (
    account text PRIMARY KEY REFERENCES ledger_account (account),
    balance bigint NOT NULL,
    last_seq bigint NOT NULL
);

CREATE TABLE ledger_lot (
    lot_id text PRIMARY KEY,
    account text NOT NULL REFERENCES ledger_account (account),
    origin text NOT NULL,
    expires_us bigint,
    opened_seq bigint NOT NULL,
    posting_index integer NOT NULL,
    amount_opened bigint NOT NULL CHECK (amount_opened > 0),
    remaining bigint NOT NULL CHECK (remaining >= 0 AND remaining <= amount_opened)
);
CREATE INDEX ledger_lot_account ON ledger_lot (account, opened_seq);

CREATE TABLE ledger_hold (
    hold_seq bigint PRIMARY KEY,
    account text NOT NULL REFERENCES ledger_account (account),
    unit text NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    expires_us bigint NOT NULL,
    status text NOT NULL CHECK (status IN ('active', 'captured', 'voided')),
    closed_seq bigint
);
CREATE INDEX ledger_hold_active ON ledger_hold (account) WHERE status = 'active';

CREATE TABLE ledger_merkle_node (
    chain_id text NOT NULL,
    level smallint NOT NULL CHECK (level >= 1),
    node_index bigint NOT NULL CHECK (node_index >= 0),
    node_hash bytea NOT NULL CHECK (length(node_hash) = 32),
    PRIMARY KEY (chain_id, level, node_index)
);

CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger journal table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    for table in APPEND_ONLY_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()"
        )


def downgrade() -> None:
    raise NotImplementedError("the journal is append-only; it is never migrated down")

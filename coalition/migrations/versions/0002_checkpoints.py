"""Signed checkpoints: append-only, one row per signature the log ever made.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE ledger_checkpoint (
            chain_id text NOT NULL,
            checkpoint_id bigint GENERATED ALWAYS AS IDENTITY,
            tree_size bigint NOT NULL CHECK (tree_size >= 0),
            root_hash bytea NOT NULL CHECK (length(root_hash) = 32),
            key_name text NOT NULL,
            key_id bigint NOT NULL,
            signed_note bytea NOT NULL,
            signed_at_us bigint NOT NULL,
            PRIMARY KEY (chain_id, checkpoint_id)
        );
        CREATE INDEX ledger_checkpoint_size ON ledger_checkpoint (chain_id, tree_size);
        CREATE TRIGGER ledger_checkpoint_append_only BEFORE UPDATE OR DELETE ON ledger_checkpoint
            FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
        CREATE TRIGGER ledger_checkpoint_no_truncate BEFORE TRUNCATE ON ledger_checkpoint
            FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
        """
    )


def downgrade() -> None:
    raise NotImplementedError("checkpoints are append-only; they are never migrated down")

"""Corrections are bounded by the entry they correct: the append path reads, under the
chain's lock, every earlier correction of the entries a batch corrects — by this index.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ledger_entry_corrects ON ledger_entry (chain_id, corrects_seq)"
        " WHERE corrects_seq IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ledger_entry_corrects")

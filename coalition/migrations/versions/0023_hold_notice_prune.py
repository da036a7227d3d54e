"""The application role may delete hold-expiry notices: the scheduler's ``outbox`` job
forgets the notices of holds since captured or voided (coalition/hold_expiry.py,
``prune_notices``), so the table stays as small as the set of expired holds still open.

Revision ID: 0023
Revises: 0021
"""

from alembic import op

revision = "0023"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("GRANT DELETE ON coalition_hold_expiry_notice TO coalition_app")


def downgrade() -> None:
    op.execute("REVOKE DELETE ON coalition_hold_expiry_notice FROM coalition_app")

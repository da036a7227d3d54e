"""The role the application runs as: it may append and read, never rewrite the journal.

Triggers refuse UPDATE, DELETE and TRUNCATE on journal tables, but a table's owner can
disable triggers and a superuser can skip them (session_replication_role). So the
service must not connect as either: deployments log in as a member of
``coalition_app``, which holds INSERT and SELECT on journal tables and UPDATE only on
the derived state (balances, lot remainders, holds, the chain head). Migrations run as
the owner.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JOURNAL_TABLES = (
    "ledger_entry",
    "ledger_posting",
    "ledger_account",
    "ledger_merkle_node",
    "ledger_checkpoint",
)
DERIVED_TABLES = ("ledger_chain", "ledger_balance", "ledger_lot", "ledger_hold")


def upgrade() -> None:
    op.execute(
        """
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'coalition_app') THEN
                CREATE ROLE coalition_app NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
            END IF;
        END
        $$;
        """
    )
    op.execute("GRANT USAGE ON SCHEMA public TO coalition_app")
    for table in JOURNAL_TABLES:
        op.execute(f"GRANT SELECT, INSERT ON {table} TO coalition_app")
    for table in DERIVED_TABLES:
        op.execute(f"GRANT SELECT, INSERT, UPDATE ON {table} TO coalition_app")
    op.execute("GRANT SELECT ON alembic_version TO coalition_app")


def downgrade() -> None:
    raise NotImplementedError("the journal's schema is never migrated down")

"""Settlement runs, their statements and reconciliations.

A run row carries the run's canonical bytes (what was computed, approved and paid); its
status follows the journal facts ``settlement_approved`` and ``settlement_paid``.
Statements are immutable: a correction is a new run (a new revision), never an edit.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SCHEMA = """
CREATE TABLE coalition_settlement_run (
    run_id text PRIMARY KEY,
    period text NOT NULL,
    revision integer NOT NULL,
    replaces_run_id text REFERENCES coalition_settlement_run (run_id),
    start_seq bigint NOT NULL,
    end_seq bigint NOT NULL,
    checkpoint_id bigint NOT NULL,
    status text NOT NULL CHECK (status IN ('computed', 'approved', 'paid', 'superseded')),
    computed_by text NOT NULL,
    computed_at_us bigint NOT NULL,
    approved_by text,
    approved_seq bigint,
    run_bytes bytea NOT NULL,
    UNIQUE (period, revision)
);

CREATE TABLE coalition_statement (
    run_id text NOT NULL REFERENCES coalition_settlement_run (run_id),
    party text NOT NULL,
    format text NOT NULL CHECK (format IN ('json', 'csv', 'pdf')),
    content bytea NOT NULL,
    PRIMARY KEY (run_id, party, format)
);

CREATE TABLE coalition_payment_confirmation (
    run_id text NOT NULL REFERENCES coalition_settlement_run (run_id),
    end_to_end_id text NOT NULL,
    confirmed_seq bigint NOT NULL,
    PRIMARY KEY (run_id, end_to_end_id)
);

CREATE TABLE coalition_reconciliation (
    reconciliation_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner_id text NOT NULL,
    from_us bigint NOT NULL,
    to_us bigint NOT NULL,
    submitted_at_us bigint NOT NULL,
    result jsonb NOT NULL
);
CREATE INDEX coalition_reconciliation_partner ON coalition_reconciliation (partner_id);
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    for table in (
        "coalition_settlement_run",
        "coalition_statement",
        "coalition_payment_confirmation",
        "coalition_reconciliation",
    ):
        op.execute(f"GRANT SELECT, INSERT, UPDATE ON {table} TO coalition_app")


def downgrade() -> None:
    raise NotImplementedError("settlement records are never migrated down")

"""API keys: only a hash of each secret is stored; each key is bound to one principal.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE coalition_api_key (
            key_id text PRIMARY KEY,
            secret_sha256 bytea NOT NULL CHECK (length(secret_sha256) = 32),
            role text NOT NULL CHECK (role IN ('partner', 'auditor', 'finance', 'operator')),
            partner_id text REFERENCES coalition_partner (partner_id),
            label text NOT NULL,
            created_at_us bigint NOT NULL,
            revoked_at_us bigint,
            CHECK ((role = 'partner') = (partner_id IS NOT NULL))
        );
        """
    )
    op.execute("GRANT SELECT, INSERT, UPDATE ON coalition_api_key TO coalition_app")


def downgrade() -> None:
    raise NotImplementedError("never migrated down")

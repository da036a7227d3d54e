"""Web console sessions (docs/DESIGN.md, "The web console"): an API key is exchanged for
a session; only the SHA-256 of the session token is stored, with the key it stands for and when it
expires. A session ends when it expires, when it is signed out (``ended_at_us``) or when
its key is revoked (the key's row is read with every request). Rows are never deleted by
the application role.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE coalition_console_session (
            token_sha256 bytea PRIMARY KEY CHECK (length(token_sha256) = 32),
            key_id text NOT NULL REFERENCES coalition_api_key (key_id),
            created_at_us bigint NOT NULL,
            expires_at_us bigint NOT NULL,
            ended_at_us bigint,
            CHECK (expires_at_us > created_at_us)
        );
        """
    )
    op.execute("GRANT SELECT, INSERT, UPDATE ON coalition_console_session TO coalition_app")


def downgrade() -> None:
    raise NotImplementedError("never migrated down")

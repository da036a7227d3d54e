"""The application role may revoke an API key, and change nothing else of it.

Migration 0006 granted ``coalition_app`` UPDATE on the whole ``coalition_api_key`` row,
so the app's credentials could rewrite a key's hash (plant a secret they know on an
operator's key), turn a partner key into an operator key, or lift a revocation. Now it
may update ``revoked_at_us`` alone, and a trigger (owned by the schema's owner, which the
app cannot disable) refuses to clear or move a revocation once made.

The app still reads ``secret_sha256``: it checks presented keys against it in-process
(coalition/api/keycache.py caches the record per process).

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("REVOKE UPDATE ON coalition_api_key FROM coalition_app")
    op.execute("GRANT UPDATE (revoked_at_us) ON coalition_api_key TO coalition_app")
    op.execute(
        """
        CREATE FUNCTION coalition_api_key_revocation_final() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF OLD.revoked_at_us IS NOT NULL
               AND NEW.revoked_at_us IS DISTINCT FROM OLD.revoked_at_us THEN
                RAISE EXCEPTION 'API key % is revoked: a revocation is final', OLD.key_id
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            RETURN NEW;
        END
        $$;
        CREATE TRIGGER coalition_api_key_revocation_final
            BEFORE UPDATE ON coalition_api_key
            FOR EACH ROW EXECUTE FUNCTION coalition_api_key_revocation_final();
        """
    )


def downgrade() -> None:
    raise NotImplementedError("never migrated down")

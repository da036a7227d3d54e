"""API keys: every change to a key row is announced on channel ``coalition_api_key``
(payload: the key id; ``*`` after a TRUNCATE), when its transaction commits, so that the
API's processes drop the key from their caches of key checks — whichever way the row was
changed (the API, the CLI, SQL by hand).

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION coalition_api_key_notify() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'TRUNCATE' THEN
                PERFORM pg_notify('coalition_api_key', '*');
            ELSE
                PERFORM pg_notify('coalition_api_key', OLD.key_id);
            END IF;
            RETURN NULL;
        END;
        $$;
        CREATE TRIGGER coalition_api_key_changed
            AFTER UPDATE OR DELETE ON coalition_api_key
            FOR EACH ROW EXECUTE FUNCTION coalition_api_key_notify();
        CREATE TRIGGER coalition_api_key_truncated
            AFTER TRUNCATE ON coalition_api_key
            FOR EACH STATEMENT EXECUTE FUNCTION coalition_api_key_notify();
        """
    )


def downgrade() -> None:
    raise NotImplementedError("never migrated down")

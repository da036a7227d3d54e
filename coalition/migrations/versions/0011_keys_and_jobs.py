"""Keys that expire, a role for scraping metrics, suspension heard by key caches, and the
scheduler's record of its jobs.

- ``coalition_api_key.expires_at_us``: optional; a key past it is refused (checked at
  every request, cached or not).
- role ``metrics``: a key that may read ``/metrics`` and nothing else.
- a change of a partner's status is announced on ``coalition_api_key`` (payload
  ``partner:<id>``), so the API's processes drop that partner's cached key checks.
- ``coalition_job``: per scheduled job, its last run (start, duration, outcome, what it
  said) and its runs counted by outcome, written by whichever process ran it, under the
  job's advisory lock; ``/metrics`` reads it, so every process shows the same figures.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE coalition_api_key ADD COLUMN expires_at_us bigint;
        ALTER TABLE coalition_api_key DROP CONSTRAINT coalition_api_key_role_check;
        ALTER TABLE coalition_api_key ADD CONSTRAINT coalition_api_key_role_check
            CHECK (role IN ('partner', 'auditor', 'finance', 'operator', 'metrics'));
        ALTER TABLE coalition_api_key ADD CONSTRAINT coalition_api_key_expiry_check
            CHECK (expires_at_us IS NULL OR expires_at_us > created_at_us);

        CREATE FUNCTION coalition_partner_status_notify() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('coalition_api_key', 'partner:' || NEW.partner_id);
            RETURN NULL;
        END;
        $$;
        CREATE TRIGGER coalition_partner_status_changed
            AFTER UPDATE OF status ON coalition_partner
            FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
            EXECUTE FUNCTION coalition_partner_status_notify();

        CREATE TABLE coalition_job (
            job text PRIMARY KEY,
            last_started_us bigint NOT NULL,
            last_duration_us bigint NOT NULL CHECK (last_duration_us >= 0),
            last_outcome text NOT NULL CHECK (last_outcome IN ('ok', 'refused', 'failed')),
            last_detail text NOT NULL,
            runs_ok bigint NOT NULL DEFAULT 0,
            runs_refused bigint NOT NULL DEFAULT 0,
            runs_failed bigint NOT NULL DEFAULT 0,
            runs_busy bigint NOT NULL DEFAULT 0
        );
        """
    )
    op.execute("GRANT SELECT, INSERT, UPDATE ON coalition_job TO coalition_app")


def downgrade() -> None:
    raise NotImplementedError("never migrated down")

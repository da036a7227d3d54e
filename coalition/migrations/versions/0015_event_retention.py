"""The outbox is pruned: events older than the retention go (coalition/outbox_retention.py).

- ``coalition_app`` may DELETE from ``coalition_event``: the scheduler's ``outbox`` job
  runs as the app and deletes a prefix of seqs (never a hole: the oldest kept event's
  seq, less one, is the horizon every reader is judged against); and from
  ``coalition_webhook_delivery``, the delivery log, whose attempts older than the same
  retention it deletes too.
- A webhook subscription that had not yet received events the job pruned is told: its
  status becomes ``behind`` (nothing more is sent until its partner reactivates it), and
  ``pruned_first_seq`` / ``pruned_last_seq`` / ``pruned_events`` say which of its events
  went. They stay after the reactivation (which resumes after ``pruned_last_seq``) as the
  record of the last loss.

Revision ID: 0015
Revises: 0013
"""

from alembic import op

revision = "0015"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE coalition_webhook_subscription
            DROP CONSTRAINT coalition_webhook_subscription_status_check,
            ADD CONSTRAINT coalition_webhook_subscription_status_check
                CHECK (status IN ('active', 'failing', 'behind', 'deleted')),
            ADD COLUMN pruned_first_seq bigint,
            ADD COLUMN pruned_last_seq bigint,
            ADD COLUMN pruned_events bigint NOT NULL DEFAULT 0 CHECK (pruned_events >= 0),
            ADD CONSTRAINT coalition_webhook_subscription_pruned_range
                CHECK (pruned_first_seq IS NULL AND pruned_last_seq IS NULL
                       OR pruned_first_seq <= pruned_last_seq)
        """
    )
    op.execute("GRANT DELETE ON coalition_event TO coalition_app")
    op.execute("GRANT DELETE ON coalition_webhook_delivery TO coalition_app")


def downgrade() -> None:
    raise NotImplementedError("the outbox is never migrated down")

"""Console sign-in limits, console session pruning, and the record of online verification.

- ``coalition_signin_attempt``: each sign-in attempt not (yet) known to have succeeded,
  by client address and time. An attempt is written before its key is checked and
  deleted when the key proves good, so every worker process counts the same failures,
  and a flood of concurrent guesses is counted in full (coalition/signin_limit.py).
- the application role may now delete console sessions and sign-in attempts: the
  scheduler's ``console`` job prunes the sessions that ended or expired, and attempts
  older than the limit's window (coalition/console_prune.py). Indexes serve those
  deletes and the bound on live sessions per key.
- ``coalition_verification``: the last online verification of the journal (full or
  incremental), what it verified (tree size, root) or its first failure, and where the
  next incremental run resumes (coalition/verification_record.py).

Revision ID: 0017
Revises: 0015
"""

from alembic import op

revision = "0017"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE coalition_signin_attempt (
            attempt_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            client text NOT NULL CHECK (length(client) BETWEEN 1 AND 100),
            at_us bigint NOT NULL
        );
        CREATE INDEX coalition_signin_attempt_client ON coalition_signin_attempt (client, at_us);
        CREATE INDEX coalition_signin_attempt_at ON coalition_signin_attempt (at_us);

        CREATE INDEX coalition_console_session_key
            ON coalition_console_session (key_id, created_at_us);
        CREATE INDEX coalition_console_session_expires
            ON coalition_console_session (expires_at_us);

        CREATE TABLE coalition_verification (
            chain_id text PRIMARY KEY,
            last_run_at_us bigint NOT NULL,
            last_kind text NOT NULL CHECK (last_kind IN ('full', 'incremental')),
            last_ok boolean NOT NULL,
            last_from_size bigint NOT NULL CHECK (last_from_size >= 0),
            last_tree_size bigint NOT NULL CHECK (last_tree_size >= 0),
            last_root bytea CHECK (length(last_root) = 32),
            last_failure text NOT NULL DEFAULT '',
            last_duration_us bigint NOT NULL CHECK (last_duration_us >= 0),
            last_by text NOT NULL,
            -- where an incremental run resumes: a verified tree (NULL after a failure)
            verified_size bigint CHECK (verified_size >= 0),
            verified_frontier bytea[],
            verified_leaf_hash bytea,
            last_full_at_us bigint,
            CHECK (last_ok OR last_failure <> '')
        );
        """
    )
    op.execute("GRANT SELECT, INSERT, DELETE ON coalition_signin_attempt TO coalition_app")
    op.execute("GRANT DELETE ON coalition_console_session TO coalition_app")
    op.execute("GRANT SELECT, INSERT, UPDATE ON coalition_verification TO coalition_app")


def downgrade() -> None:
    raise NotImplementedError("never migrated down")

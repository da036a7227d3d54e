"""Sign a checkpoint when the policy says one is due (every N entries or T seconds).

The scheduler (``coalition.jobs``, job ``checkpoint``) calls ``tick`` on its cadence,
under the job's advisory lock, so one process of a deployment signs at a time.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ledger import checkpoint_log, reads
from ledger.checkpoint_log import CheckpointPolicy
from ledger.signed_note import Signer
from ledger.timefmt import now_us


class Checkpointer:
    def __init__(self, database_url: str, signer: Signer, policy: CheckpointPolicy) -> None:
        self._url = database_url  # kept for callers that name the database; tick uses conn
        self._signer = signer
        self._policy = policy

    def tick(self, conn: psycopg.Connection[Any]) -> checkpoint_log.StoredCheckpoint | None:
        """The checkpoint signed now, or None when none is due. Raises
        ``InconsistentCheckpoint`` if the journal does not extend the last one."""
        now = now_us()
        last = checkpoint_log.latest(conn)
        if not self._policy.due(last, reads.head(conn).tree_size, now):
            return None
        return checkpoint_log.sign_now(conn, self._signer, now)

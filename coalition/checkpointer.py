"""Sign checkpoints by policy (every N entries or T seconds) in a background thread."""

from __future__ import annotations

import logging
import threading

import psycopg

from ledger import checkpoint_log, reads
from ledger.checkpoint_log import CheckpointPolicy
from ledger.signed_note import Signer
from ledger.timefmt import now_us

_log = logging.getLogger(__name__)


class Checkpointer:
    def __init__(
        self,
        database_url: str,
        signer: Signer,
        policy: CheckpointPolicy,
        poll_seconds: float = 1.0,
    ) -> None:
        self._url = database_url
        self._signer = signer
        self._policy = policy
        self._poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpointer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def tick(self, conn: psycopg.Connection[object]) -> checkpoint_log.StoredCheckpoint | None:
        now = now_us()
        last = checkpoint_log.latest(conn)
        if not self._policy.due(last, reads.head(conn).tree_size, now):
            return None
        return checkpoint_log.sign_now(conn, self._signer, now)

    def _run(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            try:
                with psycopg.connect(self._url, autocommit=True) as conn:
                    signed = self.tick(conn)
                if signed is not None:
                    _log.info("signed checkpoint of %d entries", signed.tree_size)
            except checkpoint_log.InconsistentCheckpoint:
                _log.critical("journal does not extend the last checkpoint: signing stopped")
                return
            except Exception:
                _log.exception("checkpoint attempt failed; retrying")

"""The log's signed checkpoints: made on demand or by policy, stored, listed.

Before signing, the new tree is proven consistent with the last checkpoint the log
signed (an RFC 9162 consistency proof built from stored nodes and checked with the
hashlib-only verifier). A log that would contradict what it signed before refuses to
sign at all: that is the one promise witnesses hold it to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from ledger import proofs
from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.journal import DEFAULT_CHAIN_ID
from ledger.merkle_verify import ProofError, verify_consistency
from ledger.signed_note import Signer

Conn = psycopg.Connection[Any]
CHECKPOINTS_PER_PAGE_MAX = 1000
_SIGNING_LOCK_KEY = 727_002


class InconsistentCheckpoint(RuntimeError):
    """The journal no longer extends what the log signed before. Never sign over it."""


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    checkpoint_id: int
    tree_size: int
    root_hash: bytes
    key_name: str
    key_id: int
    signed_note: bytes
    signed_at_us: int


_COLUMNS = "checkpoint_id, tree_size, root_hash, key_name, key_id, signed_note, signed_at_us"


def _stored(row: Any) -> StoredCheckpoint:
    return StoredCheckpoint(row[0], row[1], bytes(row[2]), row[3], row[4], bytes(row[5]), row[6])


def latest(conn: Conn, chain_id: str = DEFAULT_CHAIN_ID) -> StoredCheckpoint | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM ledger_checkpoint WHERE chain_id = %s"
        " ORDER BY checkpoint_id DESC LIMIT 1",
        (chain_id,),
    ).fetchone()
    return None if row is None else _stored(row)


def list_checkpoints(
    conn: Conn, *, after_id: int = 0, limit: int = 100, chain_id: str = DEFAULT_CHAIN_ID
) -> list[StoredCheckpoint]:
    limit = max(1, min(limit, CHECKPOINTS_PER_PAGE_MAX))
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM ledger_checkpoint WHERE chain_id = %s AND checkpoint_id > %s"
        " ORDER BY checkpoint_id LIMIT %s",
        (chain_id, after_id, limit),
    ).fetchall()
    return [_stored(r) for r in rows]


def covering(conn: Conn, seq: int, chain_id: str = DEFAULT_CHAIN_ID) -> StoredCheckpoint | None:
    """The newest checkpoint whose tree holds entry ``seq``."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM ledger_checkpoint WHERE chain_id = %s AND tree_size > %s"
        " ORDER BY checkpoint_id DESC LIMIT 1",
        (chain_id, seq),
    ).fetchone()
    return None if row is None else _stored(row)


def sign_now(
    conn: Conn, signer: Signer, now_us: int, chain_id: str = DEFAULT_CHAIN_ID
) -> StoredCheckpoint:
    """Sign the current tree (or return the last checkpoint if nothing changed)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SIGNING_LOCK_KEY,))
        # FOR SHARE holds appends back for the moment it takes to read a stable head.
        row = conn.execute(
            "SELECT tree_size FROM ledger_chain WHERE chain_id = %s FOR SHARE", (chain_id,)
        ).fetchone()
        tree_size = 0 if row is None else int(row[0])
        root_hash = proofs.root_hash_at(conn, tree_size, chain_id)
        previous = latest(conn, chain_id)
        if previous is not None:
            _check_extends(conn, previous, tree_size, root_hash, chain_id)
            if (previous.tree_size, previous.key_id) == (tree_size, signer.key_id):
                return previous
        note = sign_checkpoint(Checkpoint(signer.name, tree_size, root_hash), signer)
        stored = conn.execute(
            "INSERT INTO ledger_checkpoint (chain_id, tree_size, root_hash, key_name, key_id,"
            f" signed_note, signed_at_us) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (chain_id, tree_size, root_hash, signer.name, signer.key_id, note, now_us),
        ).fetchone()
        assert stored is not None
        return _stored(stored)


def _check_extends(
    conn: Conn, previous: StoredCheckpoint, tree_size: int, root_hash: bytes, chain_id: str
) -> None:
    if tree_size < previous.tree_size:
        raise InconsistentCheckpoint(
            f"journal holds {tree_size} entries but checkpoint {previous.checkpoint_id}"
            f" signed {previous.tree_size}: entries were removed"
        )
    if previous.tree_size == 0:
        return  # every tree extends the empty one
    proof = proofs.consistency_proof(conn, previous.tree_size, tree_size, chain_id)
    try:
        verify_consistency(previous.tree_size, tree_size, proof, previous.root_hash, root_hash)
    except ProofError as exc:
        raise InconsistentCheckpoint(
            f"tree of {tree_size} does not extend checkpoint {previous.checkpoint_id}"
            f" ({previous.tree_size} entries): {exc}"
        ) from None


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """Sign after this many new entries or this much time, whichever comes first."""

    entries_max: int | None = 1000
    seconds_max: float | None = 60.0

    def due(self, last: StoredCheckpoint | None, tree_size: int, now_us: int) -> bool:
        if last is None:
            return tree_size > 0
        grown = tree_size - last.tree_size
        if grown <= 0:
            return False
        if self.entries_max is not None and grown >= self.entries_max:
            return True
        waited_us = now_us - last.signed_at_us
        return self.seconds_max is not None and waited_us >= self.seconds_max * 1_000_000

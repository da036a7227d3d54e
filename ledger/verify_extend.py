"""Incremental online verification: extend a tree verified before by the entries appended
since, at most ``entries_max`` of them, without replaying the journal from its start.

What it checks of each new entry is what needs only the entry and the verified tree it
extends: the rows are contiguous, the stored leaf hash is the hash of the stored bytes,
the bytes are canonical JSON of an object whose ``seq`` is its place and whose ``prev``
is the leaf hash before it, and the row's columns say what the bytes say. The Merkle
frontier is extended leaf by leaf, so the root at every signed checkpoint in the range
must equal the checkpoint's root, and when the range reaches the head, the chain head's
size, leaf hash and frontier must equal the extension's.

What it cannot check is what needs the whole state: the entry rules (balances, lots,
holds), the postings and derived rows, and that rows verified before are unchanged (it
does not read them again). Those are the full verification's (``verify_database``), which
a caller runs now and then; this module says nothing about them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import psycopg

from ledger import compact_range, reads
from ledger.canonical import NotCanonicalizable, parse_canonical
from ledger.journal import DEFAULT_CHAIN_ID
from ledger.timefmt import parse_time_us
from ledger.verify import VerificationFailed


@dataclass(frozen=True, slots=True)
class VerifiedTree:
    """A tree some verification has vouched for: where the next one starts."""

    tree_size: int
    frontier_hashes: tuple[bytes, ...]
    head_leaf_hash: bytes  # of entry tree_size - 1; 32 zero bytes of an empty tree

    @property
    def root_hash(self) -> bytes:
        return compact_range.root_hash(list(self.frontier_hashes), self.tree_size)


@dataclass(frozen=True, slots=True)
class Extended:
    tree: VerifiedTree
    entries: int  # verified by this run
    checkpoints: int  # signed checkpoints whose root this run recomputed
    reached_head: bool


EMPTY = VerifiedTree(0, (), bytes(32))


def extend_verified(
    conn: psycopg.Connection[Any],
    start: VerifiedTree,
    entries_max: int,
    chain_id: str = DEFAULT_CHAIN_ID,
) -> Extended:
    """Verify entries ``start.tree_size`` onwards, at most ``entries_max``, in one
    read-only snapshot; raise ``VerificationFailed`` at the first that is wrong."""
    assert entries_max >= 1
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        head = reads.head(conn, chain_id)
        if head.tree_size < start.tree_size:
            raise VerificationFailed(
                None, "truncated", f"at least {start.tree_size} entries", head.tree_size
            )
        end = min(head.tree_size, start.tree_size + entries_max)
        signed = {
            int(size): bytes(root)
            for size, root in conn.execute(
                "SELECT tree_size, root_hash FROM ledger_checkpoint WHERE chain_id = %s"
                " AND tree_size > %s AND tree_size <= %s",
                (chain_id, start.tree_size, end),
            )
        }
        frontier = list(start.frontier_hashes)
        previous = start.head_leaf_hash
        size = start.tree_size
        for stored in reads.iter_entries(conn, size, end, chain_id):
            _check_entry(stored, size, previous)
            frontier, _ = compact_range.append(frontier, size, stored.leaf_hash)
            previous, size = stored.leaf_hash, size + 1
            if size in signed:
                root = compact_range.root_hash(frontier, size)
                if root != signed[size]:
                    raise VerificationFailed(
                        size - 1, "checkpoint_root", signed[size].hex(), root.hex()
                    )
        if size != end:
            raise VerificationFailed(size, "entry_present", f"entry {size}", "none stored")
        if end == head.tree_size and end > 0:
            if head.head_leaf_hash != previous:
                raise VerificationFailed(
                    end - 1, "head_leaf_hash", previous.hex(), head.head_leaf_hash.hex()
                )
            if list(head.frontier_hashes) != frontier:
                raise VerificationFailed(
                    end - 1, "head_frontier", "the extended frontier", "a different frontier"
                )
    tree = VerifiedTree(end, tuple(frontier), previous)
    return Extended(tree, end - start.tree_size, len(signed), end == head.tree_size)


def _check_entry(stored: reads.StoredEntry, seq: int, previous: bytes) -> None:
    if stored.seq != seq:
        raise VerificationFailed(seq, "entry_present", f"entry {seq}", f"entry {stored.seq}")
    computed = hashlib.sha256(b"\x00" + stored.canonical).digest()
    if computed != stored.leaf_hash:
        raise VerificationFailed(seq, "leaf_hash", computed.hex(), stored.leaf_hash.hex())
    try:
        entry = parse_canonical(stored.canonical)
    except NotCanonicalizable as exc:
        raise VerificationFailed(seq, "canonical", "RFC 8785 bytes", str(exc)) from None
    if type(entry) is not dict:
        raise VerificationFailed(seq, "json", "an object", type(entry).__name__)
    if entry.get("seq") != seq:
        raise VerificationFailed(seq, "seq", seq, entry.get("seq"))
    if entry.get("prev") != previous.hex():  # 64 zeros before the first entry
        raise VerificationFailed(seq, "prev_link", previous.hex(), entry.get("prev"))
    try:
        ref = entry["ref"]
        wanted = (
            parse_time_us(entry["time"]),
            entry["kind"],
            ref["scope"],
            ref["key"],
            entry.get("corrects"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise VerificationFailed(seq, "shape", "time, kind and ref", repr(exc)) from None
    columns = (stored.time_us, stored.kind, stored.ref_scope, stored.ref_key, stored.corrects_seq)
    if columns != wanted:
        raise VerificationFailed(seq, "entry_columns", wanted, columns)

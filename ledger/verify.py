"""Verify the journal: every hash, every link, every rule, replayed from the first entry.

Offline (``verify_export``) it needs only the export; online (``verify_database``) it
also checks that what the database keeps beside the canonical bytes (row columns,
postings, balances, lots, holds, Merkle nodes, the chain head) equals the replay. Either
way the first failure is reported with its ``seq``, the check that failed, and the
expected and actual values.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ledger import compact_range
from ledger.canonical import NotCanonicalizable, parse_canonical
from ledger.compact_range import NodeId
from ledger.rejections import Rejection
from ledger.rules import Effects, apply_entry
from ledger.state import State, moves_of_entry

Progress = Callable[[int], None]
EntryBytes = Callable[[int], bytes]  # the canonical bytes of an entry already fed
PROGRESS_EVERY_ENTRIES = 50_000


class VerificationFailed(Exception):
    def __init__(self, seq: int | None, check: str, expected: object, actual: object) -> None:
        self.seq, self.check, self.expected, self.actual = seq, check, expected, actual
        where = "journal" if seq is None else f"seq {seq}"
        super().__init__(f"{where}: {check} failed: expected {expected}, got {actual}")


@dataclass(slots=True)
class Replay:
    """Everything a verification recomputes; ``feed`` takes one entry's bytes at a time."""

    state: State = field(default_factory=State)
    frontier_hashes: list[bytes] = field(default_factory=list)
    new_nodes: list[tuple[NodeId, bytes]] = field(default_factory=list)
    keep_nodes: bool = False
    sizes_wanted: frozenset[int] = frozenset()  # record the root at these tree sizes
    roots_at: dict[int, bytes] = field(default_factory=dict)
    last_seq_by_account: dict[str, int] = field(default_factory=dict)
    # Where the replay finds an earlier entry again, the first time a later one corrects
    # it (the bound on corrections needs what it moved); None: keep every entry's bytes.
    entry_bytes: EntryBytes | None = None
    _kept: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state.moves_of = self._moves_of

    def _moves_of(self, seq: int) -> dict[str, int]:
        canonical = self._kept[seq] if self.entry_bytes is None else self.entry_bytes(seq)
        postings = json.loads(canonical)["postings"]  # bytes this replay already checked
        return moves_of_entry(postings)

    @property
    def tree_size(self) -> int:
        return self.state.tree_size

    def root_hash(self) -> bytes:
        return compact_range.root_hash(self.frontier_hashes, self.state.tree_size)

    def feed(self, canonical: bytes) -> tuple[dict[str, Any], Effects, bytes]:
        seq = self.state.tree_size
        leaf_hash = hashlib.sha256(b"\x00" + canonical).digest()
        try:
            entry = parse_canonical(canonical)
        except NotCanonicalizable as exc:
            raise VerificationFailed(seq, "canonical", "RFC 8785 bytes", str(exc)) from None
        if type(entry) is not dict:
            raise VerificationFailed(seq, "json", "an object", type(entry).__name__)
        if entry.get("seq") != seq:
            raise VerificationFailed(seq, "seq", seq, entry.get("seq"))
        if entry.get("prev") != self.state.prev_leaf_hash_hex:
            raise VerificationFailed(
                seq, "prev_link", self.state.prev_leaf_hash_hex, entry.get("prev")
            )
        outcome = apply_entry(entry, self.state)
        if isinstance(outcome, Rejection):
            raise VerificationFailed(seq, f"rule:{outcome.code.value}", "accepted", outcome.detail)
        self.state.prev_leaf_hash_hex = leaf_hash.hex()
        if self.entry_bytes is None:
            self._kept.append(canonical)
        for account in outcome.accounts_opened:
            self.last_seq_by_account[account.name] = seq
        for posting in outcome.postings:
            self.last_seq_by_account[posting.account] = seq
        self.frontier_hashes, nodes = compact_range.append(self.frontier_hashes, seq, leaf_hash)
        if self.keep_nodes:
            self.new_nodes.extend(nodes)
        if seq + 1 in self.sizes_wanted:
            self.roots_at[seq + 1] = self.root_hash()
        return entry, outcome, leaf_hash


@dataclass(frozen=True, slots=True)
class Verified:
    tree_size: int
    root_hash: bytes
    head_leaf_hash: bytes
    state: State
    roots_at: dict[int, bytes]
    frontier_hashes: tuple[bytes, ...] = ()  # of the tree verified (online verification)


def verify_lines(
    lines: Iterable[bytes],
    progress: Progress | None = None,
    sizes_wanted: Iterable[int] = (),
    entry_bytes: EntryBytes | None = None,
) -> Verified:
    """Verify an export given as its lines (each with its trailing ``\\n``)."""
    replay = Replay(sizes_wanted=frozenset(sizes_wanted), entry_bytes=entry_bytes)
    if 0 in replay.sizes_wanted:
        replay.roots_at[0] = replay.root_hash()
    for line in lines:
        if not line.endswith(b"\n"):
            raise VerificationFailed(replay.tree_size, "line_end", "\\n", line[-20:])
        replay.feed(line[:-1])
        if progress is not None and replay.tree_size % PROGRESS_EVERY_ENTRIES == 0:
            progress(replay.tree_size)
    return _verified(replay)


def verify_export(
    path: str, progress: Progress | None = None, sizes_wanted: Iterable[int] = ()
) -> Verified:
    offsets = array("q")  # where each line starts: 8 bytes an entry, not the entry
    with open(path, "rb") as export, open(path, "rb") as again:

        def entry_bytes(seq: int) -> bytes:
            again.seek(offsets[seq])
            return again.readline()[:-1]

        return verify_lines(_lines(export, offsets), progress, sizes_wanted, entry_bytes)


def _lines(export: Any, offsets: array[int]) -> Iterator[bytes]:
    position = 0
    for line in export:
        offsets.append(position)
        position += len(line)
        yield line


def check_against_known(verified: Verified, tree_size: int, root_hash: bytes) -> None:
    """Compare with a head seen before (a checkpoint, an earlier export's last line).

    A journal cut short and resealed is internally consistent; only a head recorded
    earlier, outside the operator's reach, shows that entries are gone. The replay must
    have been asked for the root at ``tree_size`` (``sizes_wanted``).
    """
    if verified.tree_size < tree_size:
        raise VerificationFailed(
            None, "truncated", f"at least {tree_size} entries", f"{verified.tree_size} entries"
        )
    actual = verified.roots_at.get(tree_size)
    if actual != root_hash:
        raise VerificationFailed(
            tree_size - 1 if tree_size else None,
            "root_hash",
            root_hash.hex(),
            actual.hex() if actual is not None else "not computed",
        )


def _verified(replay: Replay) -> Verified:
    return Verified(
        replay.tree_size,
        replay.root_hash(),
        bytes.fromhex(replay.state.prev_leaf_hash_hex),
        replay.state,
        dict(replay.roots_at),
    )

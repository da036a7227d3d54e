"""The one way to write: append a batch of entries in one database transaction.

Inside the transaction the chain head is locked (so writers to a chain are serialised and
``seq`` has neither gaps nor forks), references are looked up for idempotency, the state
of every account the batch touches is loaded, each entry is built and judged by
``ledger.rules`` on its own (a rejected entry is rejected alone), and the accepted ones
are hashed, chained, added to the Merkle tree and written with the derived state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg

from ledger import _store
from ledger.build import build_entry
from ledger.canonical import NotCanonicalizable, canonical_bytes
from ledger.rejections import Rejection
from ledger.rejections import RejectionCode as Code
from ledger.requests import EntryRequest
from ledger.rules import Effects, apply_entry, moved_by
from ledger.state import State
from ledger.timefmt import now_us

ENTRY_BYTES_MAX = 64 * 1024
ENTRIES_PER_BATCH_MAX = 10_000
DEFAULT_CHAIN_ID = "main"


@dataclass(frozen=True, slots=True)
class Appended:
    seq: int
    leaf_hash: bytes
    time_us: int
    replayed: bool = False  # True: the reference was already in the journal


AppendResult = Appended | Rejection


def leaf_hash_of(canonical: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + canonical).digest()


AfterAppend = Callable[[psycopg.Connection[Any], list[tuple[EntryRequest, Appended]]], None]


class BatchGuard(Protocol):
    """A caller's rules that are not about postings (an amount of money within an
    earlier one, a counterparty still active), judged per entry inside the batch's transaction."""

    def judge(self, request: EntryRequest, state: State, time_us: int) -> Rejection | None:
        """None to let the ledger's rules judge it next; a rejection refuses it alone.

        ``state`` is the ledger's view of the accounts the batch touches, as the entries
        before this one left it (read-only), and ``time_us`` the time the entry will get."""

    def accepted(self, request: EntryRequest) -> None:
        """The entry was appended: later entries of the batch must see it."""


# Called once per batch after the chain's lock is taken, so that what it reads cannot
# change until the batch commits: every writer of the chain waits for that lock.
BeforeAppend = Callable[[psycopg.Connection[Any], Sequence[EntryRequest]], BatchGuard | None]


class Journal:
    """Append and head access for one chain, on connections the caller provides.

    ``before_append`` runs inside the batch's transaction once the chain is locked; the
    guard it returns judges each entry (not those replayed) before the ledger's rules, so
    a caller's preconditions hold against state no concurrent batch can change.
    ``after_append`` runs inside the batch's transaction, after its rows are written, with
    the entries appended (not those replayed): a caller keeps its own read models there,
    so that they commit or roll back with the journal, never apart from it.
    """

    def __init__(
        self,
        chain_id: str = DEFAULT_CHAIN_ID,
        clock_us: Callable[[], int] = now_us,
        after_append: AfterAppend | None = None,
        before_append: BeforeAppend | None = None,
    ) -> None:
        self.chain_id = chain_id
        self.clock_us = clock_us
        self.after_append = after_append
        self.before_append = before_append

    def append(
        self, conn: psycopg.Connection[Any], requests: Sequence[EntryRequest]
    ) -> list[AppendResult]:
        """Append ``requests`` in one transaction; results come back in request order."""
        assert len(requests) <= ENTRIES_PER_BATCH_MAX, "split the batch"
        with conn.pipeline(), conn.transaction():
            batch = _Batch(conn, self.chain_id, self.clock_us(), requests)
            results = batch.run(self.before_append)
            if self.after_append is not None:
                appended = [
                    (request, result)
                    for request, result in zip(requests, results, strict=True)
                    if isinstance(result, Appended) and not result.replayed
                ]
                if appended:
                    self.after_append(conn, appended)
            return results


class _Batch:
    def __init__(
        self,
        conn: psycopg.Connection[Any],
        chain_id: str,
        clock_us: int,
        requests: Sequence[EntryRequest],
    ) -> None:
        self.conn = conn
        self.chain_id = chain_id
        self.clock_us = clock_us
        self.requests = list(requests)
        self.effects: list[Effects] = []
        self.entry_rows: list[tuple[Any, ...]] = []

    def run(self, before_append: BeforeAppend | None) -> list[AppendResult]:
        loaded = _store.load(self.conn, self.chain_id, self.requests)
        self.state = loaded.state
        self.state.moves_of = self._moves_in_batch
        guard = None if before_append is None else before_append(self.conn, self.requests)
        known_refs = {
            ref: (request_hash, Appended(seq, leaf_hash, time_us, replayed=True))
            for ref, (request_hash, seq, leaf_hash, time_us) in loaded.refs.items()
        }
        results: list[AppendResult] = []
        batch_refs: dict[tuple[str, str], tuple[bytes, Appended]] = {}
        for request in self.requests:
            ref = (request.ref_scope, request.ref_key)
            request_hash = request.request_hash()
            seen = batch_refs.get(ref) or known_refs.get(ref)
            if seen is not None:
                results.append(_replay(seen, request_hash))
                continue
            time_us = max(self.clock_us, self.state.last_time_us)  # never backwards
            refused = None if guard is None else guard.judge(request, self.state, time_us)
            if refused is not None:
                results.append(refused)
                continue
            result = self._append_one(request, request_hash, time_us)
            if isinstance(result, Appended):
                batch_refs[ref] = (request_hash, result)
                if guard is not None:
                    guard.accepted(request)
            results.append(result)
        if self.entry_rows:
            _store.write(self.conn, self.chain_id, loaded, self.effects, self.entry_rows)
        return results

    def _moves_in_batch(self, seq: int) -> dict[str, int]:
        """What an entry appended earlier in this batch moved (one it corrects): the
        batch's accepted entries have consecutive seqs."""
        fx = self.effects[seq - self.effects[0].seq]
        assert fx.seq == seq
        return moved_by(fx)

    def _append_one(self, request: EntryRequest, request_hash: bytes, time_us: int) -> AppendResult:
        state = self.state
        try:
            canonical_bytes(request.meta)
        except NotCanonicalizable as exc:
            return Rejection(Code.INVALID_ENTRY, f"meta: {exc}")
        entry = build_entry(request, state, time_us)
        try:
            canonical = canonical_bytes(entry)
        except NotCanonicalizable:
            # Only a field the rules bound (an amount, a sequence number) can fail here,
            # so the rules name it; they change no state when they reject.
            rejected = apply_entry(entry, state)
            assert isinstance(rejected, Rejection), "rules accepted an unencodable entry"
            return rejected
        if len(canonical) > ENTRY_BYTES_MAX:
            return Rejection(Code.LIMIT_EXCEEDED, f"entry exceeds {ENTRY_BYTES_MAX} bytes")
        outcome = apply_entry(entry, state)
        if isinstance(outcome, Rejection):
            return outcome
        leaf_hash = leaf_hash_of(canonical)
        state.prev_leaf_hash_hex = leaf_hash.hex()
        self.effects.append(outcome)
        self.entry_rows.append(
            (
                self.chain_id,
                outcome.seq,
                time_us,
                request.kind,
                request.ref_scope,
                request.ref_key,
                request_hash,
                canonical,
                leaf_hash,
                request.corrects_seq,
            )
        )
        return Appended(outcome.seq, leaf_hash, time_us)


def _replay(seen: tuple[bytes, Appended], request_hash: bytes) -> AppendResult:
    original_hash, original = seen
    if original_hash != request_hash:
        return Rejection(
            Code.IDEMPOTENCY_CONFLICT,
            f"reference already used by entry {original.seq} with a different payload",
        )
    return Appended(original.seq, original.leaf_hash, original.time_us, replayed=True)

"""The one way to write: append a batch of entries in one database transaction.

Inside the transaction the chain head is locked (so writers to a chain are serialised and
``seq`` has neither gaps nor forks), references are looked up for idempotency, the state
of every account the batch touches is loaded, each entry is built and judged by
``ledger.rules`` on its own (a rejected entry is rejected alone), and the accepted ones
are hashed, chained, added to the Merkle tree and written with the derived state.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg

from ledger import _store
from ledger.build import build_entry
from ledger.canonical import NotCanonicalizable, check_json, encode_checked
from ledger.rejections import Rejection
from ledger.rejections import RejectionCode as Code
from ledger.requests import EntryRequest
from ledger.rules import Effects, apply_entry, moved_by
from ledger.state import HOLD_ACTIVE, State
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
    # The entry as appended (its canonical JSON form, docs/FORMAT.md), so that an
    # ``after_append`` keeps its read models from what the ledger chose (the lots an
    # entry took) without reading the entry back; None for a replay.
    entry: dict[str, Any] | None = field(default=None, compare=False, repr=False)


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
            batch = _Batch(self.chain_id, self.clock_us(), requests)
            batch.start(_store.load(conn, self.chain_id, batch.requests), None)
            batch.judge(self._guard(conn, batch.requests))
            batch.queue_writes(conn, self.after_append)
            return batch.results

    def preview(
        self, conn: psycopg.Connection[Any], requests: Sequence[EntryRequest]
    ) -> list[tuple[AppendResult, dict[str, Any] | None]]:
        """Judge ``requests`` exactly as ``append`` would, and write nothing: each result
        (a seq that would be given, a rejection, a replay) with the entry that would be
        appended (None if not). One read-only snapshot, no lock: writers never wait for
        it, and an append that commits after it may be judged otherwise."""
        assert len(requests) <= ENTRIES_PER_BATCH_MAX, "split the batch"
        # READ ONLY: the server refuses any write in it, so ending it by COMMIT is safe.
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            with conn.pipeline():
                batch = _Batch(self.chain_id, self.clock_us(), requests)
                batch.entries = []
                batch.start(_store.load(conn, self.chain_id, batch.requests, lock=False), None)
                batch.judge(self._guard(conn, batch.requests))
        by_seq = {e["seq"]: e for e in batch.entries}
        return [
            (r, by_seq.get(r.seq) if isinstance(r, Appended) and not r.replayed else None)
            for r in batch.results
        ]

    def append_stream(
        self,
        conn: psycopg.Connection[Any],
        take: Take,
        done: Done,
        first: Sequence[Sequence[EntryRequest]] = (),
    ) -> list[Sequence[EntryRequest]]:
        """Append the batches ``take`` hands out, one transaction each, overlapping the
        Python work of batch n+1 (judging, building, encoding, hashing) with the server
        writing and committing batch n. See docs/DESIGN.md, "Pipelined appends".

        ``take(wait)`` returns the next batch, or None: when ``wait`` is False, at once
        (nothing queued); when True, only to stop. ``done(batch, outcome)`` is called
        once per batch, in the order taken, after its commit (its results) or its failure
        (the exception: nothing of it was written, or, if the connection broke, unknown).
        ``conn`` is in autocommit mode (this method opens and commits each transaction).
        Returns [] when ``take`` says stop, or, if the connection broke, the batches taken
        and never sent (``first`` of the next call, on a new connection).
        """
        assert conn.autocommit, "append_stream runs its own transactions"
        pending: deque[Sequence[EntryRequest]] = deque(first)
        alone = False
        try:
            with conn.pipeline() as pipeline:
                while not conn.broken:
                    if not pending:
                        requests = take(True)
                        if requests is None:
                            break
                        pending.append(requests)
                    alone = self._stream(conn, pipeline, pending, take, done, alone)
        except psycopg.Error:
            if not conn.broken:
                raise
        return list(pending)

    def _guard(
        self, conn: psycopg.Connection[Any], requests: Sequence[EntryRequest]
    ) -> BatchGuard | None:
        return None if self.before_append is None else self.before_append(conn, requests)

    def _stream(
        self,
        conn: psycopg.Connection[Any],
        pipeline: psycopg.Pipeline,
        pending: deque[Sequence[EntryRequest]],
        take: Take,
        done: Done,
        alone: bool,
    ) -> bool:
        """Run batches, the first of ``pending`` started afresh (nothing judged ahead) and,
        if ``alone``, committed before the next is read; the next while each is ready.
        Returns with the batches to start afresh next (none: take more) left in
        ``pending``, and whether the first of them must run alone."""
        batch = _Batch(self.chain_id, self.clock_us(), pending.popleft())
        try:
            conn.execute("BEGIN")
            batch.start(_store.load(conn, self.chain_id, batch.requests), None)
            batch.judge(self._guard(conn, batch.requests))
        except Exception as exc:  # the caller gets it, per batch
            _recover(conn, pipeline)
            done(batch.requests, exc)
            return False
        while True:
            following = None if alone else pending.popleft() if pending else take(False)
            alone = False
            loaded = None
            if following is not None:
                try:
                    # Read what the next batch touches still under this batch's lock,
                    # before its writes: the rows are as this batch found them, and the
                    # next batch sees this one's effects through the state it carries.
                    queued = _store.queue_load(conn, self.chain_id, list(following))
                    loaded = queued.parse(batch.first_seq)
                except Exception:  # something the next batch carries: both start afresh,
                    _recover(conn, pipeline)  # this one alone, the next on its own reads
                    pending.extendleft([following, batch.requests])
                    return True
            try:
                batch.queue_writes(conn, self.after_append)
                commit = conn.execute("COMMIT")
                if following is None:
                    pipeline.sync()
            except Exception as exc:
                _recover(conn, pipeline)
                done(batch.requests, exc)
                if following is not None:
                    pending.appendleft(following)  # never written: it starts afresh
                return False
            if following is None or loaded is None:
                done(batch.requests, batch.results)
                return False
            after = _Batch(self.chain_id, self.clock_us(), following)
            try:
                # The next transaction locks the head at once: it waits for this commit.
                # In the try: a pipeline may deliver this batch's failure (a write the
                # database refused) while these are sent, not only when results are read.
                conn.execute("BEGIN")
                head = _store.lock_head(conn, self.chain_id)
                after.start(loaded, batch.carry())
                # A guard's reads run here, under the next batch's lock (so they wait
                # for this batch's commit, and see it).
                after.judge(self._guard(conn, after.requests))
                row = head.fetchone()  # the lock, after this batch's commit
            except Exception as exc:
                _recover(conn, pipeline)  # first: the COMMIT's outcome comes with it
                done(batch.requests, batch.results if _committed(commit) else exc)
                # Judged on a state that may not be true (or never sent, if the connection
                # broke): it starts afresh.
                pending.appendleft(after.requests)
                return False
            done(batch.requests, batch.results)
            if row is None or not batch.is_head(row):
                # Another writer appended between the two: judge the batch again.
                conn.execute("ROLLBACK")
                pipeline.sync()
                pending.appendleft(after.requests)
                return False
            batch = after


Take = Callable[[bool], Sequence[EntryRequest] | None]
Done = Callable[[Sequence[EntryRequest], "list[AppendResult] | BaseException"], None]


def _committed(commit: psycopg.Cursor[Any]) -> bool:
    result = commit.pgresult
    return result is not None and result.status == psycopg.pq.ExecStatus.COMMAND_OK


def _recover(conn: psycopg.Connection[Any], pipeline: psycopg.Pipeline) -> None:
    """After a failure inside a streamed transaction: drain the pipeline and roll back.

    Through ``conn.rollback``, which also forgets the prepared statements (psycopg may
    count one as prepared whose PREPARE was in the aborted part of the pipeline)."""
    if conn.broken or conn.closed:
        return
    with contextlib.suppress(psycopg.Error):  # the failure itself, or what it aborted
        pipeline.sync()
    if conn.broken:
        return
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        conn.execute("BEGIN")  # so that rollback() runs, and resets the statements
    conn.rollback()


@dataclass(slots=True)
class _Carry:
    """What a batch leaves for the next one judged before it commits: the state of every
    account, lot and hold it loaded (as its entries left them), the references it wrote,
    its effects (for corrections of its entries) and the chain's head and frontier."""

    state: State
    complete: set[str]  # accounts whose lots and holds it read in full (or opened)
    effects: list[Effects]
    refs: dict[tuple[str, str], tuple[bytes, Appended]]
    frontier: list[bytes]


class _Batch:
    """One batch's judgment: its view of the state, its results, and the rows it writes."""

    def __init__(self, chain_id: str, clock_us: int, requests: Sequence[EntryRequest]) -> None:
        self.chain_id = chain_id
        self.clock_us = clock_us
        self.requests = list(requests)
        self.results: list[AppendResult] = []
        self.effects: list[Effects] = []
        self.rows = _store.EntryColumns()
        self.state = State()
        self.first_seq = 0
        self.frontier: list[bytes] = []
        self.names: list[str] = []
        self.own: tuple[set[str], set[str], set[int], set[int]] = (set(), set(), set(), set())
        self.known_refs: dict[tuple[str, str], tuple[bytes, Appended]] = {}
        self.batch_refs: dict[tuple[str, str], tuple[bytes, Appended]] = {}
        self.before: _Carry | None = None
        self.entries: list[dict[str, Any]] | None = None  # kept only for a preview

    def start(self, loaded: _store.Loaded, before: _Carry | None) -> None:
        """The batch's view: what it loaded, under what the batch before left (if that
        one is not committed yet, its loads were read before its writes)."""
        self.known_refs = {
            ref: (request_hash, Appended(seq, leaf_hash, time_us, replayed=True))
            for ref, (request_hash, seq, leaf_hash, time_us) in loaded.refs.items()
        }
        got = loaded.state
        self.names = loaded.names
        self.own = (set(got.accounts), set(got.lots), set(got.holds), set(got.corrected))
        if before is None:
            self.state, self.frontier = got, loaded.frontier_hashes
        else:
            self.state, self.frontier = _carried(before, got), before.frontier
            self.known_refs.update(before.refs)
        self.first_seq = self.state.tree_size
        self.before = before
        self.state.moves_of = self._moves_of

    def judge(self, guard: BatchGuard | None) -> None:
        state, results = self.state, self.results
        batch_refs, known_refs = self.batch_refs, self.known_refs
        for request in self.requests:
            ref = (request.ref_scope, request.ref_key)
            request_hash = request.request_hash()
            seen = batch_refs.get(ref) or known_refs.get(ref)
            if seen is not None:
                results.append(_replay(seen, request_hash))
                continue
            time_us = max(self.clock_us, state.last_time_us)  # never backwards
            refused = None if guard is None else guard.judge(request, state, time_us)
            if refused is not None:
                results.append(refused)
                continue
            result = self._append_one(request, request_hash, time_us)
            if isinstance(result, Appended):
                batch_refs[ref] = (request_hash, result)
                if guard is not None:
                    guard.accepted(request)
            results.append(result)

    def queue_writes(self, conn: psycopg.Connection[Any], after_append: AfterAppend | None) -> None:
        if not self.effects:
            return
        self.frontier = _store.write(
            conn, self.chain_id, self.state, self.frontier, self.effects, self.rows
        )
        if after_append is not None:
            appended = [
                (request, result)
                for request, result in zip(self.requests, self.results, strict=True)
                if isinstance(result, Appended) and not result.replayed
            ]
            after_append(conn, appended)

    def carry(self) -> _Carry:
        """What the next batch needs of this one: only what this batch read or wrote
        (anything else, the next batch reads itself, under this batch's lock)."""
        s, effects = self.state, self.effects
        accounts, lots, holds, corrected = self.own
        opened = {a.name for fx in effects for a in fx.accounts_opened}
        complete = set(self.names) | opened
        names = accounts | opened
        lot_ids = lots | {lot.lot_id for fx in effects for lot in fx.lots_opened}
        hold_seqs = holds | {fx.hold_opened.hold_seq for fx in effects if fx.hold_opened}
        carried = State(s.tree_size, s.prev_leaf_hash_hex, s.last_time_us)
        for name in complete:
            ids = s.lot_ids_by_account.get(name)
            if ids:
                carried.lot_ids_by_account[name] = list(ids)
                lot_ids.update(ids)
            held = s.hold_seqs_by_account.get(name)
            if held:
                carried.hold_seqs_by_account[name] = set(held)
                hold_seqs.update(held)
        carried.accounts = {n: s.accounts[n] for n in names if n in s.accounts}
        carried.balances = {n: s.balances[n] for n in names if n in s.balances}
        carried.lots = {i: s.lots[i] for i in lot_ids}
        carried.holds = {h: s.holds[h] for h in hold_seqs}
        corrected |= {fx.corrected[0] for fx in effects if fx.corrected is not None}
        carried.corrected = {k: s.corrected[k] for k in corrected if k in s.corrected}
        self.before = None  # one batch back is all the next one needs
        return _Carry(carried, complete, effects, self.batch_refs, self.frontier)

    def is_head(self, row: tuple[Any, ...]) -> bool:
        """Whether the locked head is the one this batch leaves."""
        tree_size, head_hash = row[0], bytes(row[1])
        state = self.state
        return tree_size == state.tree_size and head_hash.hex() == state.prev_leaf_hash_hex

    def _moves_of(self, seq: int) -> dict[str, int]:
        """What an entry appended earlier in this batch (or the batch before, not yet
        read back) moved: a batch's accepted entries have consecutive seqs."""
        for effects in (self.effects, self.before.effects if self.before else []):
            if effects and effects[0].seq <= seq <= effects[-1].seq:
                fx = effects[seq - effects[0].seq]
                assert fx.seq == seq
                return moved_by(fx)
        raise AssertionError(f"entry {seq}'s postings were not loaded before it was corrected")

    def _append_one(self, request: EntryRequest, request_hash: bytes, time_us: int) -> AppendResult:
        state = self.state
        try:
            check_json(request.meta)
        except NotCanonicalizable as exc:
            return Rejection(Code.INVALID_ENTRY, f"meta: {exc}")
        try:
            check_json([request.kind, request.ref_scope, request.ref_key])
        except NotCanonicalizable as exc:
            return Rejection(Code.INVALID_ENTRY, f"kind or ref: {exc}")
        entry = build_entry(request, state, time_us)
        # One encoding, no decode: meta, kind and ref were checked above, and every other
        # field is one the rules bound (a float or huge amount encodes, and they refuse it).
        canonical = encode_checked(entry)
        if len(canonical) > ENTRY_BYTES_MAX:
            return Rejection(Code.LIMIT_EXCEEDED, f"entry exceeds {ENTRY_BYTES_MAX} bytes")
        outcome = apply_entry(entry, state)
        if isinstance(outcome, Rejection):
            return outcome
        if self.entries is not None:
            self.entries.append(entry)
        leaf_hash = hashlib.sha256(b"\x00" + canonical).digest()
        state.prev_leaf_hash_hex = leaf_hash.hex()
        self.effects.append(outcome)
        rows = self.rows
        rows.seq.append(outcome.seq)
        rows.time_us.append(time_us)
        rows.kind.append(request.kind)
        rows.ref_scope.append(request.ref_scope)
        rows.ref_key.append(request.ref_key)
        rows.request_hash.append(request_hash)
        rows.canonical.append(canonical)
        rows.leaf_hash.append(leaf_hash)
        rows.corrects_seq.append(request.corrects_seq)
        return Appended(outcome.seq, leaf_hash, time_us, entry=entry)


def _carried(before: _Carry, loaded: State) -> State:
    """The next batch's state: what it loaded (rows as the batch before found them, under
    that batch's lock) with everything the batch before holds put over it — its
    accounts, balances, lots and holds are as its entries left them, and it loaded in
    full every account it named, so for those its lists of lots and holds are complete."""
    prev = before.state
    state = loaded
    state.tree_size = prev.tree_size
    state.prev_leaf_hash_hex = prev.prev_leaf_hash_hex
    state.last_time_us = prev.last_time_us
    state.accounts.update(prev.accounts)
    state.balances.update(prev.balances)
    for name in before.complete:
        ids = prev.lot_ids_by_account.get(name, [])
        extra = [i for i in state.lot_ids_by_account.get(name, ()) if i not in prev.lots]
        if ids or extra:
            state.lot_ids_by_account[name] = ids + extra if extra else list(ids)
        else:
            state.lot_ids_by_account.pop(name, None)
        held = prev.hold_seqs_by_account.get(name)
        if held:
            state.hold_seqs_by_account[name] = set(held)
        else:
            state.hold_seqs_by_account.pop(name, None)
    state.lots.update(prev.lots)
    for hold_seq, hold in prev.holds.items():
        state.holds[hold_seq] = hold
        if hold.status != HOLD_ACTIVE:  # closed by the batch before
            state.hold_seqs_by_account.get(hold.account, set()).discard(hold_seq)
    state.corrected.update(prev.corrected)
    return state


def _replay(seen: tuple[bytes, Appended], request_hash: bytes) -> AppendResult:
    original_hash, original = seen
    if original_hash != request_hash:
        return Rejection(
            Code.IDEMPOTENCY_CONFLICT,
            f"reference already used by entry {original.seq} with a different payload",
        )
    return Appended(original.seq, original.leaf_hash, original.time_us, replayed=True)

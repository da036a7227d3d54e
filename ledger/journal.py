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
from typing import Any

import psycopg

from ledger import compact_range
from ledger.build import build_entry
from ledger.canonical import NotCanonicalizable, canonical_bytes
from ledger.rejections import Rejection
from ledger.rejections import RejectionCode as Code
from ledger.requests import EntryRequest
from ledger.rules import Effects, apply_entry
from ledger.state import HOLD_ACTIVE, Account, Hold, Lot, State
from ledger.timefmt import now_us

ENTRY_BYTES_MAX = 64 * 1024
ENTRIES_PER_BATCH_MAX = 10_000
DEFAULT_CHAIN_ID = "main"
_ZERO_HASH = bytes(32)


@dataclass(frozen=True, slots=True)
class Appended:
    seq: int
    leaf_hash: bytes
    time_us: int
    replayed: bool = False  # True: the reference was already in the journal


AppendResult = Appended | Rejection


def leaf_hash_of(canonical: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + canonical).digest()


class Journal:
    """Append and head access for one chain, on connections the caller provides."""

    def __init__(
        self, chain_id: str = DEFAULT_CHAIN_ID, clock_us: Callable[[], int] = now_us
    ) -> None:
        self.chain_id = chain_id
        self.clock_us = clock_us

    def append(
        self, conn: psycopg.Connection[Any], requests: Sequence[EntryRequest]
    ) -> list[AppendResult]:
        """Append ``requests`` in one transaction; results come back in request order."""
        assert len(requests) <= ENTRIES_PER_BATCH_MAX, "split the batch"
        with conn.transaction():
            return _Batch(conn, self.chain_id, self.clock_us(), requests).run()


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
        self.requests = requests
        self.state = State()
        self.effects: list[Effects] = []
        self.entry_rows: list[tuple[Any, ...]] = []

    def run(self) -> list[AppendResult]:
        frontier = self._lock_head()
        known_refs = self._load_refs()
        self._load_state()
        results: list[AppendResult] = []
        batch_refs: dict[tuple[str, str], tuple[bytes, Appended]] = {}
        for request in self.requests:
            ref = (request.ref_scope, request.ref_key)
            request_hash = request.request_hash()
            seen = batch_refs.get(ref) or known_refs.get(ref)
            if seen is not None:
                results.append(_replay(seen, request_hash))
                continue
            result = self._append_one(request, request_hash)
            if isinstance(result, Appended):
                batch_refs[ref] = (request_hash, result)
            results.append(result)
        if self.entry_rows:
            self._write(frontier)
        return results

    def _append_one(self, request: EntryRequest, request_hash: bytes) -> AppendResult:
        state = self.state
        time_us = max(self.clock_us, state.last_time_us)
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

    def _lock_head(self) -> list[bytes]:
        sql = (
            "SELECT tree_size, head_leaf_hash, last_time_us, frontier_hashes"
            " FROM ledger_chain WHERE chain_id = %s FOR UPDATE"
        )
        row = self.conn.execute(sql, (self.chain_id,)).fetchone()
        if row is None:
            self.conn.execute(
                "INSERT INTO ledger_chain VALUES (%s, 0, %s, 0, '{}') ON CONFLICT DO NOTHING",
                (self.chain_id, _ZERO_HASH),
            )
            row = self.conn.execute(sql, (self.chain_id,)).fetchone()
        assert row is not None
        tree_size, head_hash, last_time_us, frontier = row
        self.state.tree_size = tree_size
        self.state.prev_leaf_hash_hex = bytes(head_hash).hex()
        self.state.last_time_us = last_time_us
        return [bytes(h) for h in frontier]

    def _load_refs(self) -> dict[tuple[str, str], tuple[bytes, Appended]]:
        scopes = [r.ref_scope for r in self.requests]
        keys = [r.ref_key for r in self.requests]
        rows = self.conn.execute(
            "SELECT e.ref_scope, e.ref_key, e.request_hash, e.seq, e.leaf_hash, e.time_us"
            " FROM ledger_entry e JOIN unnest(%s::text[], %s::text[]) AS r(scope, key)"
            " ON e.ref_scope = r.scope AND e.ref_key = r.key",
            (scopes, keys),
        ).fetchall()
        return {
            (scope, key): (bytes(rh), Appended(seq, bytes(lh), t, replayed=True))
            for scope, key, rh, seq, lh, t in rows
        }

    def _load_state(self) -> None:
        names: set[str] = set()
        hold_seqs: list[int] = []
        lot_ids: list[str] = []
        for r in self.requests:
            names.update(p.account for p in r.postings)
            names.update(a.account for a in r.open_accounts)
            if r.hold is not None:
                names.add(r.hold.account)
            hold_seqs += [s for s in (r.capture_hold_seq, r.void_hold_seq) if s is not None]
            lot_ids += [t.lot_id for p in r.postings for t in p.lots or ()]
        conn, state = self.conn, self.state
        for row in conn.execute(
            "SELECT hold_seq, account, unit, amount, expires_us, status, closed_seq"
            " FROM ledger_hold WHERE hold_seq = ANY(%s)"
            " OR (account = ANY(%s) AND status = 'active')",
            (hold_seqs, list(names)),
        ):
            state.add_hold(Hold(*row))
            names.add(row[1])
        account_names = list(names)
        for name, unit, overdraft, lot_tracked, opened_seq, balance in conn.execute(
            "SELECT a.account, a.unit, a.overdraft, a.lot_tracked, a.opened_seq, b.balance"
            " FROM ledger_account a JOIN ledger_balance b USING (account)"
            " WHERE a.account = ANY(%s)",
            (account_names,),
        ):
            state.accounts[name] = Account(name, unit, overdraft, lot_tracked, opened_seq)
            state.balances[name] = balance
        lot_accounts = [n for n, a in state.accounts.items() if a.lot_tracked]
        if lot_accounts or lot_ids:
            for row in conn.execute(
                "SELECT lot_id, account, origin, expires_us, opened_seq, posting_index,"
                " amount_opened, remaining FROM ledger_lot"
                " WHERE (account = ANY(%s) AND remaining > 0) OR lot_id = ANY(%s)"
                " ORDER BY opened_seq, posting_index",
                (lot_accounts, lot_ids),
            ):
                state.add_lot(Lot(*row))

    def _write(self, frontier: list[bytes]) -> None:
        cur = self.conn.cursor()
        chain_id, state = self.chain_id, self.state
        with cur.copy(
            "COPY ledger_entry (chain_id, seq, time_us, kind, ref_scope, ref_key,"
            " request_hash, canonical, leaf_hash, corrects_seq) FROM STDIN"
        ) as copy:
            for row in self.entry_rows:
                copy.write_row(row)
        opened = [a for fx in self.effects for a in fx.accounts_opened]
        if opened:
            with cur.copy(
                "COPY ledger_account (account, unit, overdraft, lot_tracked, opened_seq) FROM STDIN"
            ) as copy:
                for a in opened:
                    copy.write_row((a.name, a.unit, a.overdraft, a.lot_tracked, a.opened_seq))
        last_seq: dict[str, int] = {a.name: a.opened_seq for a in opened}
        with cur.copy(
            "COPY ledger_posting (chain_id, seq, posting_index, account, unit, amount,"
            " balance_after) FROM STDIN"
        ) as copy:
            for fx in self.effects:
                for p in fx.postings:
                    copy.write_row(
                        (
                            chain_id,
                            fx.seq,
                            p.posting_index,
                            p.account,
                            p.unit,
                            p.amount,
                            p.balance_after,
                        )
                    )
                    last_seq[p.account] = fx.seq
        if last_seq:
            names = list(last_seq)
            cur.execute(
                "INSERT INTO ledger_balance (account, balance, last_seq)"
                " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[])"
                " ON CONFLICT (account) DO UPDATE"
                " SET balance = EXCLUDED.balance, last_seq = EXCLUDED.last_seq",
                (names, [state.balances[n] for n in names], [last_seq[n] for n in names]),
            )
        self._write_lots(cur)
        self._write_holds(cur)
        self._extend_tree(cur, frontier)

    def _write_lots(self, cur: psycopg.Cursor[Any]) -> None:
        new_ids = {lot.lot_id for fx in self.effects for lot in fx.lots_opened}
        if new_ids:
            with cur.copy(
                "COPY ledger_lot (lot_id, account, origin, expires_us, opened_seq,"
                " posting_index, amount_opened, remaining) FROM STDIN"
            ) as copy:
                for lot_id in sorted(new_ids):
                    lot = self.state.lots[lot_id]
                    copy.write_row(
                        (
                            lot.lot_id,
                            lot.account,
                            lot.origin,
                            lot.expires_us,
                            lot.opened_seq,
                            lot.posting_index,
                            lot.amount_opened,
                            lot.remaining,
                        )
                    )
        changed = sorted({i for fx in self.effects for i in fx.lots_changed} - new_ids)
        if changed:
            cur.execute(
                "UPDATE ledger_lot l SET remaining = v.remaining"
                " FROM unnest(%s::text[], %s::bigint[]) AS v(lot_id, remaining)"
                " WHERE l.lot_id = v.lot_id",
                (changed, [self.state.lots[i].remaining for i in changed]),
            )

    def _write_holds(self, cur: psycopg.Cursor[Any]) -> None:
        new = {fx.hold_opened.hold_seq: fx.hold_opened for fx in self.effects if fx.hold_opened}
        closed = {
            fx.hold_closed.hold_seq: fx.hold_closed
            for fx in self.effects
            if fx.hold_closed and fx.hold_closed.hold_seq not in new
        }
        if new:
            cur.executemany(
                "INSERT INTO ledger_hold VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [
                    (h.hold_seq, h.account, h.unit, h.amount, h.expires_us, h.status, h.closed_seq)
                    for h in new.values()
                ],
            )
        if closed:
            cur.executemany(
                "UPDATE ledger_hold SET status = %s, closed_seq = %s"
                " WHERE hold_seq = %s AND status = %s",
                [(h.status, h.closed_seq, h.hold_seq, HOLD_ACTIVE) for h in closed.values()],
            )

    def _extend_tree(self, cur: psycopg.Cursor[Any], frontier: list[bytes]) -> None:
        first_seq = self.effects[0].seq
        leaf_hashes = [row[8] for row in self.entry_rows]
        frontier, nodes = compact_range.append_many(frontier, first_seq, leaf_hashes)
        if nodes:
            with cur.copy(
                "COPY ledger_merkle_node (chain_id, level, node_index, node_hash) FROM STDIN"
            ) as copy:
                for node_id, node_hash in nodes:
                    copy.write_row((self.chain_id, node_id.level, node_id.index, node_hash))
        cur.execute(
            "UPDATE ledger_chain SET tree_size = %s, head_leaf_hash = %s, last_time_us = %s,"
            " frontier_hashes = %s WHERE chain_id = %s",
            (
                self.state.tree_size,
                leaf_hashes[-1],
                self.state.last_time_us,
                frontier,
                self.chain_id,
            ),
        )


def _replay(seen: tuple[bytes, Appended], request_hash: bytes) -> AppendResult:
    original_hash, original = seen
    if original_hash != request_hash:
        return Rejection(
            Code.IDEMPOTENCY_CONFLICT,
            f"reference already used by entry {original.seq} with a different payload",
        )
    return Appended(original.seq, original.leaf_hash, original.time_us, replayed=True)

"""SQL of the append path: one round trip to load, one to write, pipelined.

Every read the batch needs is sent at once and every write is an INSERT … SELECT FROM
unnest(arrays) (one statement per table, whatever the batch size), all in psycopg's
pipeline mode, so a batch costs two network round trips and one commit.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.adapt import Dumper

from ledger import compact_range
from ledger.requests import EntryRequest
from ledger.rules import Effects
from ledger.state import HOLD_ACTIVE, Account, Corrected, Hold, Lot, State

_ZERO_HASH = bytes(32)
HEAD_QUEUE_LOCK = 727_001  # pg_advisory_xact_lock's first key: writers of a chain, in turn

_LOCK_HEAD = (
    "SELECT tree_size, head_leaf_hash, last_time_us, frontier_hashes"
    " FROM ledger_chain WHERE chain_id = %s FOR UPDATE"
)
# References have their own table (a partitioned table's unique index must hold its
# partition key): the reference gives the seq, the entry the rest.
_REFS = (
    "SELECT f.ref_scope, f.ref_key, e.request_hash, e.seq, e.leaf_hash, e.time_us"
    " FROM ledger_ref f JOIN unnest(%b::text[], %b::text[]) AS r(scope, key)"
    " ON f.ref_scope = r.scope AND f.ref_key = r.key"
    " JOIN ledger_entry e ON e.chain_id = f.chain_id AND e.seq = f.seq"
    " WHERE f.chain_id = %s AND e.chain_id = %s"
)
# Each read joins the batch's names through unnest (index lookups, never a scan) and
# splits OR-conditions into UNIONs, so a batch costs the same with a million accounts.
# Every statement names the chain (%(chain)s): a distributed database routes it to the
# one node holding that chain (docs/CITUS.md).
_HOLDS = (
    "SELECT hold_seq, account, unit, amount, expires_us, status, closed_seq"
    " FROM ledger_hold WHERE chain_id = %(chain)s AND hold_seq = ANY(%(holds)s)"
    " UNION SELECT h.hold_seq, h.account, h.unit, h.amount, h.expires_us, h.status, h.closed_seq"
    " FROM ledger_hold h JOIN unnest(%(names)s::text[]) AS w(account) USING (account)"
    " WHERE h.chain_id = %(chain)s AND h.status = 'active'"
)
# Accounts named by the batch, plus those of the holds it captures or voids.
_ACCOUNTS = (
    "SELECT a.account, a.unit, a.overdraft, a.lot_tracked, a.opened_seq, b.balance"
    " FROM (SELECT unnest(%(names)s::text[]) AS account UNION SELECT account FROM ledger_hold"
    "       WHERE chain_id = %(chain)s AND hold_seq = ANY(%(holds)s)) AS w"
    " JOIN ledger_account a USING (account) JOIN ledger_balance b USING (chain_id, account)"
    " WHERE a.chain_id = %(chain)s AND b.chain_id = %(chain)s"
)
_LOTS = (
    "SELECT l.lot_id, l.account, l.origin, l.expires_us, l.opened_seq, l.posting_index,"
    " l.amount_opened, l.remaining FROM ledger_lot l"
    " JOIN unnest(%(names)s::text[]) AS w(account) USING (account)"
    " WHERE l.chain_id = %(chain)s AND l.remaining > 0"
    " UNION SELECT lot_id, account, origin, expires_us, opened_seq, posting_index,"
    " amount_opened, remaining FROM ledger_lot"
    " WHERE chain_id = %(chain)s AND lot_id = ANY(%(lots)s)"
    " ORDER BY 5, 6"
)

# For the entries a batch corrects: what each moved per account, and what its corrections
# so far gave back and took back (per correction, the net on each account).
_MOVED = (
    "SELECT seq, account, sum(amount)::bigint FROM ledger_posting"
    " WHERE chain_id = %s AND seq = ANY(%s) GROUP BY seq, account"
)
_CORRECTED_SO_FAR = (
    "SELECT corrects_seq, account, sum(greatest(net, 0))::bigint, sum(greatest(-net, 0))::bigint"
    " FROM (SELECT e.corrects_seq, p.seq, p.account, sum(p.amount) AS net"
    "       FROM ledger_entry e JOIN ledger_posting p USING (chain_id, seq)"
    "       WHERE e.chain_id = %s AND e.corrects_seq = ANY(%s)"
    "       GROUP BY e.corrects_seq, p.seq, p.account) AS c"
    " GROUP BY corrects_seq, account"
)

RefIndex = dict[tuple[str, str], tuple[bytes, int, bytes, int]]


@dataclass(slots=True)
class Loaded:
    state: State
    frontier_hashes: list[bytes]
    refs: RefIndex = field(default_factory=dict)
    names: list[str] = field(default_factory=list)  # accounts read by name: all they hold


def load(
    conn: psycopg.Connection[Any], chain_id: str, requests: list[EntryRequest], lock: bool = True
) -> Loaded:
    """Lock the chain head and read what the batch touches, in one round trip (without
    ``lock``, for a preview in a read-only snapshot: the head as that snapshot sees it)."""
    if lock:
        head = lock_head(conn, chain_id)
    else:
        head = conn.cursor()
        head.execute(_LOCK_HEAD.removesuffix(" FOR UPDATE"), (chain_id,))
    pending = queue_load(conn, chain_id, requests)
    row = head.fetchone()
    if row is None and not lock:  # nothing appended yet: an empty chain
        row = (0, _ZERO_HASH, 0, [])
    if row is None:  # the chain's first append ever
        conn.execute(
            "INSERT INTO ledger_chain VALUES (%s, 0, %s, 0, '{}') ON CONFLICT DO NOTHING",
            (chain_id, _ZERO_HASH),
        )
        return load(conn, chain_id, requests)
    tree_size, head_hash, last_time_us, frontier = row
    loaded = pending.parse(tree_size)
    state = loaded.state
    state.last_time_us = last_time_us
    state.prev_leaf_hash_hex = bytes(head_hash).hex()
    loaded.frontier_hashes = [bytes(h) for h in frontier]
    return loaded


def lock_head(conn: psycopg.Connection[Any], chain_id: str) -> psycopg.Cursor[Any]:
    """Queue the lock of the chain head (every writer of the chain takes it first); the
    cursor yields (tree_size, head_leaf_hash, last_time_us, frontier_hashes)."""
    cursor = conn.cursor()
    # Writers queue for the head in order: PostgreSQL grants a heavyweight lock to its
    # waiters first, whereas a row freed by a commit goes to whoever asks next — and a
    # pipelined writer asks at once (its next batch is queued behind its COMMIT), so
    # without the queue another connection's writer could wait for as long as it streams.
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (HEAD_QUEUE_LOCK, chain_id))
    cursor.execute(_LOCK_HEAD, (chain_id,))
    return cursor


@dataclass(slots=True)
class PendingLoad:
    """The reads of one batch, queued in the pipeline; ``parse`` waits for their rows."""

    cursors: list[psycopg.Cursor[Any]]
    corrected: list[int]
    names: list[str]

    def parse(self, tree_size: int) -> Loaded:
        """``tree_size``: the chain's size when the reads ran (entries past it are the
        caller's own, not yet written)."""
        cursors, corrected = self.cursors, self.corrected
        state = State(tree_size=tree_size)
        loaded = Loaded(state, [])
        for scope, key, request_hash, seq, leaf_hash, time_us in cursors[0]:
            loaded.refs[(scope, key)] = (bytes(request_hash), seq, bytes(leaf_hash), time_us)
        for row in cursors[1]:
            state.add_hold(Hold(*row))
        for name, unit, overdraft, lot_tracked, opened_seq, balance in cursors[2]:
            state.accounts[name] = Account(name, unit, overdraft, lot_tracked, opened_seq)
            state.balances[name] = balance
        for row in cursors[3]:
            # A lot named by a request may belong to an account the batch does not touch;
            # leaving it out lets the rules reject that request alone (lot_unknown).
            account = state.accounts.get(row[1])
            if account is not None and account.lot_tracked:
                state.add_lot(Lot(*row))
        if corrected:
            _load_corrected(state, corrected, cursors[4], cursors[5])
        loaded.names = self.names
        return loaded


def queue_load(
    conn: psycopg.Connection[Any], chain_id: str, requests: list[EntryRequest]
) -> PendingLoad:
    """Queue the reads of what the batch touches (references, holds, accounts, lots, and
    what the entries it corrects moved); they must run under the chain's lock."""
    names: set[str] = set()
    hold_seqs: list[int] = []
    lot_ids: list[str] = []
    for r in requests:
        names.update(p.account for p in r.postings)
        names.update(a.account for a in r.open_accounts)
        if r.hold is not None:
            names.add(r.hold.account)
        if r.capture_hold_seq is not None:
            hold_seqs.append(r.capture_hold_seq)
        if r.void_hold_seq is not None:
            hold_seqs.append(r.void_hold_seq)
        for p in r.postings:
            if p.lots:
                lot_ids += [t.lot_id for t in p.lots]
    name_list = sorted(names)
    corrected = sorted({r.corrects_seq for r in requests if r.corrects_seq is not None})
    cursors = [conn.cursor() for _ in range(6 if corrected else 4)]
    # Never prepared: a generic plan (what a prepared statement falls back to) cannot see
    # how few names the arrays hold and scans whole tables; each batch's reads are
    # planned for its names (unnamed statements always are).
    refs = (_texts([r.ref_scope for r in requests]), _texts([r.ref_key for r in requests]))
    names_array, holds_array = _texts(name_list), _int8s(hold_seqs)
    cursors[0].execute(_REFS, (*refs, chain_id, chain_id), prepare=False)
    named = {"chain": chain_id, "names": names_array, "holds": holds_array}
    cursors[1].execute(_HOLDS, named, prepare=False)
    cursors[2].execute(_ACCOUNTS, named, prepare=False)
    cursors[3].execute(_LOTS, {**named, "lots": _texts(lot_ids)}, prepare=False)
    if corrected:  # read under the head lock with the rest, so no correction slips by
        cursors[4].execute(_MOVED, (chain_id, _int8s(corrected)), prepare=False)
        cursors[5].execute(_CORRECTED_SO_FAR, (chain_id, _int8s(corrected)), prepare=False)
    return PendingLoad(cursors, corrected, name_list)


def _load_corrected(
    state: State, corrected: list[int], moved: psycopg.Cursor[Any], so_far: psycopg.Cursor[Any]
) -> None:
    # An entry at or past the head is not in the database: either the batch appends it
    # before correcting it (the journal finds its moves then) or the rules refuse.
    for seq in corrected:
        if seq < state.tree_size:
            state.corrected[seq] = Corrected({})
    for seq, account, net in moved:
        if net and seq in state.corrected:
            state.corrected[seq].moved[account] = net
    for seq, account, given_back, taken_back in so_far:
        bounds = state.corrected.get(seq)
        if bounds is not None:
            if given_back:
                bounds.given_back[account] = given_back
            if taken_back:
                bounds.taken_back[account] = taken_back


@dataclass(slots=True)
class EntryColumns:
    """The batch's ``ledger_entry`` rows, one list per column, filled as entries are
    accepted (so the statement's parameters are built once, never transposed)."""

    seq: list[int] = field(default_factory=list)
    time_us: list[int] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)
    ref_scope: list[str] = field(default_factory=list)
    ref_key: list[str] = field(default_factory=list)
    request_hash: list[bytes] = field(default_factory=list)
    canonical: list[bytes] = field(default_factory=list)
    leaf_hash: list[bytes] = field(default_factory=list)
    corrects_seq: list[int | None] = field(default_factory=list)


def write(
    conn: psycopg.Connection[Any],
    chain_id: str,
    state: State,
    frontier_hashes: list[bytes],
    effects: list[Effects],
    rows: EntryColumns,
) -> list[bytes]:
    """Queue every write of the batch as one statement (a data-modifying CTE per table;
    foreign keys are checked at its end, when every row is in); it reaches the server
    before the COMMIT. Returns the Merkle frontier after the batch."""
    parts: list[str] = []
    parts_sql: list[str] = []
    params: list[Any] = []

    def part(sql: str, *values: Any) -> None:
        parts.append(f"w{len(parts)} AS ({sql})")
        parts_sql.append(sql)
        params.extend(values)

    part(
        "INSERT INTO ledger_entry (chain_id, seq, time_us, kind, ref_scope, ref_key,"
        " request_hash, canonical, leaf_hash, corrects_seq)"
        " SELECT %s, * FROM unnest(%b, %b, %b, %b, %b, %b, %b, %b, %b)",
        chain_id,
        _int8s(rows.seq),
        _int8s(rows.time_us),
        _texts(rows.kind),
        _texts(rows.ref_scope),
        _texts(rows.ref_key),
        _byteas(rows.request_hash),
        _byteas(rows.canonical),
        _byteas(rows.leaf_hash),
        _int8s(rows.corrects_seq),
    )
    part(
        "INSERT INTO ledger_ref (chain_id, ref_scope, ref_key, seq)"
        " SELECT %s, * FROM unnest(%b, %b, %b)",
        chain_id,
        _texts(rows.ref_scope),
        _texts(rows.ref_key),
        _int8s(rows.seq),
    )
    opened = [a for fx in effects for a in fx.accounts_opened]
    if opened:
        part(
            "INSERT INTO ledger_account (chain_id, account, unit, overdraft, lot_tracked,"
            " opened_seq) SELECT %s, * FROM unnest(%b, %b, %b, %b, %b)",
            chain_id,
            _texts([a.name for a in opened]),
            _texts([a.unit for a in opened]),
            _bools([a.overdraft for a in opened]),
            _bools([a.lot_tracked for a in opened]),
            _int8s([a.opened_seq for a in opened]),
        )
    last_seq: dict[str, int] = {a.name: a.opened_seq for a in opened}
    p_seq: list[int] = []
    p_index: list[int] = []
    p_account: list[str] = []
    p_unit: list[str] = []
    p_amount: list[int] = []
    p_after: list[int] = []
    for fx in effects:
        seq = fx.seq
        for p in fx.postings:
            p_seq.append(seq)
            p_index.append(p.posting_index)
            p_account.append(p.account)
            p_unit.append(p.unit)
            p_amount.append(p.amount)
            p_after.append(p.balance_after)
            last_seq[p.account] = seq
    if p_seq:
        part(
            "INSERT INTO ledger_posting (chain_id, seq, posting_index, account, unit, amount,"
            " balance_after) SELECT %s, * FROM unnest(%b, %b, %b, %b, %b, %b)",
            chain_id,
            _int8s(p_seq),
            _int4s(p_index),
            _texts(p_account),
            _texts(p_unit),
            _int8s(p_amount),
            _int8s(p_after),
        )
    if last_seq:
        names = sorted(last_seq)
        part(
            "INSERT INTO ledger_balance (chain_id, account, balance, last_seq)"
            " SELECT %s, * FROM unnest(%b, %b, %b) ON CONFLICT (chain_id, account) DO UPDATE"
            " SET balance = EXCLUDED.balance, last_seq = EXCLUDED.last_seq",
            chain_id,
            _texts(names),
            _int8s([state.balances[n] for n in names]),
            _int8s([last_seq[n] for n in names]),
        )
    _write_lots(part, chain_id, state, effects)
    _write_holds(part, chain_id, effects)
    first_seq = state.tree_size - len(rows.leaf_hash)
    frontier, nodes = compact_range.append_many(frontier_hashes, first_seq, rows.leaf_hash)
    if nodes:
        part(
            "INSERT INTO ledger_merkle_node (chain_id, level, node_index, sealed_seq, node_hash)"
            " SELECT %s, * FROM unnest(%b, %b, %b, %b)",
            chain_id,
            _int2s([n.level for n, _ in nodes]),
            _int8s([n.index for n, _ in nodes]),
            _int8s([sealed_seq(n) for n, _ in nodes]),
            _byteas([h for _, h in nodes]),
        )
    params += [state.tree_size, rows.leaf_hash[-1], state.last_time_us, _byteas(frontier)]
    params.append(chain_id)
    # Inserts from arrays and the head's update plan the same for any batch, so the
    # statement may be prepared; an UPDATE … FROM unnest (lots, holds) is planned for its
    # batch, as the reads are (a generic plan could scan the table).
    updates = any(sql.startswith("UPDATE") for sql in parts_sql)
    conn.execute(
        "WITH " + ", ".join(parts) + " UPDATE ledger_chain SET tree_size = %s,"
        " head_leaf_hash = %s, last_time_us = %s, frontier_hashes = %b WHERE chain_id = %s",
        params,
        prepare=False if updates else None,
    )
    return frontier


Part = Any  # part(sql, *values): adds one CTE of the write statement


def sealed_seq(node: compact_range.NodeId) -> int:
    """The seq of the leaf that completes a Merkle node: its rows' partition key, so an
    append writes nodes only into the range its entries go to."""
    return ((node.index + 1) << node.level) - 1


def _write_lots(part: Part, chain_id: str, state: State, effects: list[Effects]) -> None:
    new_ids = sorted({lot.lot_id for fx in effects for lot in fx.lots_opened})
    if new_ids:
        lots = [state.lots[i] for i in new_ids]
        part(
            "INSERT INTO ledger_lot (chain_id, lot_id, account, origin, expires_us, opened_seq,"
            " posting_index, amount_opened, remaining)"
            " SELECT %s, * FROM unnest(%b, %b, %b, %b, %b, %b, %b, %b)",
            chain_id,
            _texts([x.lot_id for x in lots]),
            _texts([x.account for x in lots]),
            _texts([x.origin for x in lots]),
            _int8s([x.expires_us for x in lots]),
            _int8s([x.opened_seq for x in lots]),
            _int4s([x.posting_index for x in lots]),
            _int8s([x.amount_opened for x in lots]),
            _int8s([x.remaining for x in lots]),
        )
    changed = sorted({i for fx in effects for i in fx.lots_changed} - set(new_ids))
    if changed:
        part(
            "UPDATE ledger_lot l SET remaining = v.remaining"
            " FROM unnest(%b, %b) AS v(lot_id, remaining)"
            " WHERE l.chain_id = %s AND l.lot_id = v.lot_id",
            _texts(changed),
            _int8s([state.lots[i].remaining for i in changed]),
            chain_id,
        )


def _write_holds(part: Part, chain_id: str, effects: list[Effects]) -> None:
    new = {fx.hold_opened.hold_seq: fx.hold_opened for fx in effects if fx.hold_opened}
    closed = [
        fx.hold_closed
        for fx in effects
        if fx.hold_closed is not None and fx.hold_closed.hold_seq not in new
    ]
    if new:
        holds = list(new.values())
        part(
            "INSERT INTO ledger_hold (chain_id, hold_seq, account, unit, amount, expires_us,"
            " status, closed_seq) SELECT %s, * FROM unnest(%b, %b, %b, %b, %b, %b, %b)",
            chain_id,
            _int8s([h.hold_seq for h in holds]),
            _texts([h.account for h in holds]),
            _texts([h.unit for h in holds]),
            _int8s([h.amount for h in holds]),
            _int8s([h.expires_us for h in holds]),
            _texts([h.status for h in holds]),
            _int8s([h.closed_seq for h in holds]),
        )
    if closed:
        part(
            "UPDATE ledger_hold h SET status = v.status, closed_seq = v.closed_seq"
            " FROM unnest(%b, %b, %b) AS v(hold_seq, status, closed_seq)"
            " WHERE h.chain_id = %s AND h.hold_seq = v.hold_seq AND h.status = %s",
            _int8s([h.hold_seq for h in closed]),
            _texts([h.status for h in closed]),
            _int8s([h.closed_seq for h in closed]),
            chain_id,
            HOLD_ACTIVE,
        )


# One-dimensional arrays in PostgreSQL's binary format, built here in a few C-level calls
# rather than element by element by psycopg's generic list dumper (which showed as the
# largest single cost of a batch's parameters).


class _Array(bytes):
    """An array's binary form, ready to send; the subclass names its type."""

    __slots__ = ()


class _Int8Array(_Array):
    __slots__ = ()


class _Int4Array(_Array):
    __slots__ = ()


class _Int2Array(_Array):
    __slots__ = ()


class _TextArray(_Array):
    __slots__ = ()


class _ByteaArray(_Array):
    __slots__ = ()


class _BoolArray(_Array):
    __slots__ = ()


_ARRAY_OIDS = {
    _Int8Array: (1016, 20),
    _Int4Array: (1007, 23),
    _Int2Array: (1005, 21),
    _TextArray: (1009, 25),
    _ByteaArray: (1001, 17),
    _BoolArray: (1000, 16),
}


def _header(element_oid: int, count: int, has_null: bool) -> bytes:
    if count == 0:
        return struct.pack("!iiI", 0, 0, element_oid)
    return struct.pack("!iiIii", 1, int(has_null), element_oid, count, 1)


def _fixed(kind: type[_Array], code: str, size: int, values: list[Any]) -> _Array:
    element_oid = _ARRAY_OIDS[kind][1]
    if None in values:  # nullable columns (corrects_seq, expires_us, closed_seq)
        body = b"".join(_NULL if v is None else struct.pack(f"!i{code}", size, v) for v in values)
        return kind(_header(element_oid, len(values), True) + body)
    interleaved = [x for v in values for x in (size, v)]
    body = struct.pack("!" + ("i" + code) * len(values), *interleaved)
    return kind(_header(element_oid, len(values), False) + body)


_NULL = struct.pack("!i", -1)
_LENGTH = struct.Struct("!i").pack


def _int8s(values: list[Any]) -> _Array:
    return _fixed(_Int8Array, "q", 8, values)


def _int4s(values: list[Any]) -> _Array:
    return _fixed(_Int4Array, "i", 4, values)


def _int2s(values: list[Any]) -> _Array:
    return _fixed(_Int2Array, "h", 2, values)


def _bools(values: list[bool]) -> _Array:
    return _fixed(_BoolArray, "?", 1, values)


def _byteas(values: list[bytes]) -> _Array:
    body = b"".join([_LENGTH(len(v)) + v for v in values])
    return _ByteaArray(_header(17, len(values), False) + body)


def _texts(values: list[str]) -> _Array:
    encoded = [v.encode() for v in values]
    body = b"".join([_LENGTH(len(v)) + v for v in encoded])
    return _TextArray(_header(25, len(values), False) + body)


class _ArrayDumper(Dumper):
    format = psycopg.pq.Format.BINARY

    def dump(self, obj: Any) -> bytes:
        return bytes(obj)


for _kind, (_array_oid, _) in _ARRAY_OIDS.items():
    psycopg.adapters.register_dumper(
        _kind, type(f"{_kind.__name__}Dumper", (_ArrayDumper,), {"oid": _array_oid})
    )

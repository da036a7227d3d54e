"""SQL of the append path: one round trip to load, one to write, pipelined.

Every read the batch needs is sent at once and every write is an INSERT … SELECT FROM
unnest(arrays) (one statement per table, whatever the batch size), all in psycopg's
pipeline mode, so a batch costs two network round trips and one commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from ledger import compact_range
from ledger.requests import EntryRequest
from ledger.rules import Effects
from ledger.state import HOLD_ACTIVE, Account, Corrected, Hold, Lot, State

_ZERO_HASH = bytes(32)

_LOCK_HEAD = (
    "SELECT tree_size, head_leaf_hash, last_time_us, frontier_hashes"
    " FROM ledger_chain WHERE chain_id = %s FOR UPDATE"
)
_REFS = (
    "SELECT e.ref_scope, e.ref_key, e.request_hash, e.seq, e.leaf_hash, e.time_us"
    " FROM ledger_entry e JOIN unnest(%b::text[], %b::text[]) AS r(scope, key)"
    " ON e.ref_scope = r.scope AND e.ref_key = r.key"
)
# Each read joins the batch's names through unnest (index lookups, never a scan) and
# splits OR-conditions into UNIONs, so a batch costs the same with a million accounts.
_HOLDS = (
    "SELECT hold_seq, account, unit, amount, expires_us, status, closed_seq"
    " FROM ledger_hold WHERE hold_seq = ANY(%s)"
    " UNION SELECT h.hold_seq, h.account, h.unit, h.amount, h.expires_us, h.status, h.closed_seq"
    " FROM ledger_hold h JOIN unnest(%s::text[]) AS w(account) USING (account)"
    " WHERE h.status = 'active'"
)
# Accounts named by the batch, plus those of the holds it captures or voids.
_ACCOUNTS = (
    "SELECT a.account, a.unit, a.overdraft, a.lot_tracked, a.opened_seq, b.balance"
    " FROM (SELECT unnest(%s::text[]) AS account"
    "       UNION SELECT account FROM ledger_hold WHERE hold_seq = ANY(%s)) AS w"
    " JOIN ledger_account a USING (account) JOIN ledger_balance b USING (account)"
)
_LOTS = (
    "SELECT l.lot_id, l.account, l.origin, l.expires_us, l.opened_seq, l.posting_index,"
    " l.amount_opened, l.remaining FROM ledger_lot l"
    " JOIN unnest(%s::text[]) AS w(account) USING (account) WHERE l.remaining > 0"
    " UNION SELECT lot_id, account, origin, expires_us, opened_seq, posting_index,"
    " amount_opened, remaining FROM ledger_lot WHERE lot_id = ANY(%s)"
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


def load(conn: psycopg.Connection[Any], chain_id: str, requests: list[EntryRequest]) -> Loaded:
    """Lock the chain head and read what the batch touches, in one round trip."""
    names: set[str] = set()
    hold_seqs: list[int] = []
    lot_ids: list[str] = []
    for r in requests:
        names.update(p.account for p in r.postings)
        names.update(a.account for a in r.open_accounts)
        if r.hold is not None:
            names.add(r.hold.account)
        hold_seqs += [s for s in (r.capture_hold_seq, r.void_hold_seq) if s is not None]
        lot_ids += [t.lot_id for p in r.postings for t in p.lots or ()]
    name_list = sorted(names)
    corrected = sorted({r.corrects_seq for r in requests if r.corrects_seq is not None})
    cursors = [conn.cursor() for _ in range(7 if corrected else 5)]
    with conn.pipeline():
        # A generic plan (what a prepared statement falls back to) cannot see how few
        # names the arrays hold and scans whole tables; plan each batch for its names.
        conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        cursors[0].execute(_LOCK_HEAD, (chain_id,))
        refs = ([r.ref_scope for r in requests], [r.ref_key for r in requests])
        cursors[1].execute(_REFS, refs)
        cursors[2].execute(_HOLDS, (hold_seqs, name_list))
        cursors[3].execute(_ACCOUNTS, (name_list, hold_seqs))
        cursors[4].execute(_LOTS, (name_list, lot_ids))
        if corrected:  # read under the head lock with the rest, so no correction slips by
            cursors[5].execute(_MOVED, (chain_id, corrected))
            cursors[6].execute(_CORRECTED_SO_FAR, (chain_id, corrected))
    head = cursors[0].fetchone()
    if head is None:  # the chain's first append ever
        conn.execute(
            "INSERT INTO ledger_chain VALUES (%s, 0, %s, 0, '{}') ON CONFLICT DO NOTHING",
            (chain_id, _ZERO_HASH),
        )
        return load(conn, chain_id, requests)
    state = State()
    tree_size, head_hash, last_time_us, frontier = head
    state.tree_size, state.last_time_us = tree_size, last_time_us
    state.prev_leaf_hash_hex = bytes(head_hash).hex()
    loaded = Loaded(state, [bytes(h) for h in frontier])
    for scope, key, request_hash, seq, leaf_hash, time_us in cursors[1]:
        loaded.refs[(scope, key)] = (bytes(request_hash), seq, bytes(leaf_hash), time_us)
    for row in cursors[2]:
        state.add_hold(Hold(*row))
    for name, unit, overdraft, lot_tracked, opened_seq, balance in cursors[3]:
        state.accounts[name] = Account(name, unit, overdraft, lot_tracked, opened_seq)
        state.balances[name] = balance
    for row in cursors[4]:
        # A lot named by a request may belong to an account the batch does not touch;
        # leaving it out lets the rules reject that request alone (lot_unknown).
        account = state.accounts.get(row[1])
        if account is not None and account.lot_tracked:
            state.add_lot(Lot(*row))
    if corrected:
        _load_corrected(state, corrected, cursors[5], cursors[6])
    return loaded


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


def write(
    conn: psycopg.Connection[Any],
    chain_id: str,
    loaded: Loaded,
    effects: list[Effects],
    entry_rows: list[tuple[Any, ...]],
) -> None:
    """Queue every write of the batch; they go to the server with the COMMIT."""
    state = loaded.state
    columns = list(zip(*entry_rows, strict=True))
    conn.execute(
        "INSERT INTO ledger_entry (chain_id, seq, time_us, kind, ref_scope, ref_key,"
        " request_hash, canonical, leaf_hash, corrects_seq)"
        " SELECT %s, * FROM unnest(%b::bigint[], %b::bigint[], %b::text[], %b::text[],"
        " %b::text[], %b::bytea[], %b::bytea[], %b::bytea[], %b::bigint[])",
        (chain_id, *[list(c) for c in columns[1:]]),  # rows start with chain_id
    )
    opened = [a for fx in effects for a in fx.accounts_opened]
    if opened:
        conn.execute(
            "INSERT INTO ledger_account (account, unit, overdraft, lot_tracked, opened_seq)"
            " SELECT * FROM unnest(%b::text[], %b::text[], %b::bool[], %b::bool[], %b::bigint[])",
            _columns([(a.name, a.unit, a.overdraft, a.lot_tracked, a.opened_seq) for a in opened]),
        )
    last_seq: dict[str, int] = {a.name: a.opened_seq for a in opened}
    postings = []
    for fx in effects:
        for p in fx.postings:
            postings.append((fx.seq, p.posting_index, p.account, p.unit, p.amount, p.balance_after))
            last_seq[p.account] = fx.seq
    if postings:
        conn.execute(
            "INSERT INTO ledger_posting (chain_id, seq, posting_index, account, unit, amount,"
            " balance_after) SELECT %s, * FROM unnest(%b::bigint[], %b::int[], %b::text[],"
            " %b::text[], %b::bigint[], %b::bigint[])",
            (chain_id, *_columns(postings)),
        )
    if last_seq:
        names = sorted(last_seq)
        conn.execute(
            "INSERT INTO ledger_balance (account, balance, last_seq)"
            " SELECT * FROM unnest(%b::text[], %b::bigint[], %b::bigint[])"
            " ON CONFLICT (account) DO UPDATE"
            " SET balance = EXCLUDED.balance, last_seq = EXCLUDED.last_seq",
            (names, [state.balances[n] for n in names], [last_seq[n] for n in names]),
        )
    _write_lots(conn, state, effects)
    _write_holds(conn, effects)
    _extend_tree(conn, chain_id, loaded, [row[8] for row in entry_rows])


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


def _write_lots(conn: psycopg.Connection[Any], state: State, effects: list[Effects]) -> None:
    new_ids = sorted({lot.lot_id for fx in effects for lot in fx.lots_opened})
    if new_ids:
        lots = [state.lots[i] for i in new_ids]
        conn.execute(
            "INSERT INTO ledger_lot (lot_id, account, origin, expires_us, opened_seq,"
            " posting_index, amount_opened, remaining) SELECT * FROM unnest(%b::text[],"
            " %b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::int[], %b::bigint[],"
            " %b::bigint[])",
            _columns(
                [
                    (
                        x.lot_id,
                        x.account,
                        x.origin,
                        x.expires_us,
                        x.opened_seq,
                        x.posting_index,
                        x.amount_opened,
                        x.remaining,
                    )
                    for x in lots
                ]
            ),
        )
    changed = sorted({i for fx in effects for i in fx.lots_changed} - set(new_ids))
    if changed:
        conn.execute(
            "UPDATE ledger_lot l SET remaining = v.remaining"
            " FROM unnest(%b::text[], %b::bigint[]) AS v(lot_id, remaining)"
            " WHERE l.lot_id = v.lot_id",
            (changed, [state.lots[i].remaining for i in changed]),
        )


def _write_holds(conn: psycopg.Connection[Any], effects: list[Effects]) -> None:
    new = {fx.hold_opened.hold_seq: fx.hold_opened for fx in effects if fx.hold_opened}
    closed = [
        fx.hold_closed
        for fx in effects
        if fx.hold_closed is not None and fx.hold_closed.hold_seq not in new
    ]
    if new:
        conn.execute(
            "INSERT INTO ledger_hold SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[],"
            " %b::bigint[], %b::bigint[], %b::text[], %b::bigint[])",
            _columns(
                [
                    (h.hold_seq, h.account, h.unit, h.amount, h.expires_us, h.status, h.closed_seq)
                    for h in new.values()
                ]
            ),
        )
    if closed:
        conn.execute(
            "UPDATE ledger_hold h SET status = v.status, closed_seq = v.closed_seq"
            " FROM unnest(%b::bigint[], %b::text[], %b::bigint[]) AS v(hold_seq, status,"
            " closed_seq) WHERE h.hold_seq = v.hold_seq AND h.status = %s",
            (*_columns([(h.hold_seq, h.status, h.closed_seq) for h in closed]), HOLD_ACTIVE),
        )


def _extend_tree(
    conn: psycopg.Connection[Any], chain_id: str, loaded: Loaded, leaf_hashes: list[bytes]
) -> None:
    state = loaded.state
    first_seq = state.tree_size - len(leaf_hashes)
    frontier, nodes = compact_range.append_many(loaded.frontier_hashes, first_seq, leaf_hashes)
    if nodes:
        conn.execute(
            "INSERT INTO ledger_merkle_node (chain_id, level, node_index, node_hash)"
            " SELECT %s, * FROM unnest(%b::smallint[], %b::bigint[], %b::bytea[])",
            (
                chain_id,
                [n.level for n, _ in nodes],
                [n.index for n, _ in nodes],
                [h for _, h in nodes],
            ),
        )
    conn.execute(
        "UPDATE ledger_chain SET tree_size = %s, head_leaf_hash = %s, last_time_us = %s,"
        " frontier_hashes = %s WHERE chain_id = %s",
        (state.tree_size, leaf_hashes[-1], state.last_time_us, frontier, chain_id),
    )

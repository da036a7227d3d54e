"""Online verification: the replay of ``ledger.verify`` against what the database keeps.

Beyond the offline checks it compares every stored column and derived row with the
replay: entry columns and leaf hashes, postings with their running balances, accounts,
balances, lots, holds, Merkle nodes and the chain head. Anyone editing tables directly
(bypassing the append-only triggers as a superuser) is caught at the first row that no
longer agrees, and named.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import psycopg

from ledger import reads
from ledger.journal import DEFAULT_CHAIN_ID
from ledger.timefmt import parse_time_us
from ledger.verify import Progress, Replay, VerificationFailed, Verified

_PAGE = 10_000


def verify_database(
    conn: psycopg.Connection[Any],
    *,
    chain_id: str = DEFAULT_CHAIN_ID,
    progress: Progress | None = None,
    sizes_wanted: Iterable[int] = (),
) -> Verified:
    """Replay the stored journal and compare every stored row with the replay.

    ``sizes_wanted``: tree sizes whose root to record (for ``check_against_known``).
    """
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return _verify(conn, chain_id, progress, frozenset(sizes_wanted))


def _verify(
    conn: psycopg.Connection[Any],
    chain_id: str,
    progress: Progress | None,
    sizes_wanted: frozenset[int],
) -> Verified:
    head = reads.head(conn, chain_id)

    def entry_bytes(seq: int) -> bytes:
        stored = reads.entry(conn, seq, chain_id)
        assert stored is not None, f"entry {seq} was replayed, then vanished"
        return stored.canonical

    replay = Replay(keep_nodes=True, sizes_wanted=sizes_wanted, entry_bytes=entry_bytes)
    if 0 in sizes_wanted:
        replay.roots_at[0] = replay.root_hash()
    postings = _postings(conn, chain_id)
    for stored in reads.iter_entries(conn, 0, None, chain_id):
        expected_seq = replay.tree_size
        if stored.seq != expected_seq:
            raise VerificationFailed(
                expected_seq,
                "entry_present",
                f"entry {expected_seq}",
                f"next stored entry is {stored.seq}",
            )
        computed = _leaf(stored.canonical)
        if computed != stored.leaf_hash:
            raise VerificationFailed(
                stored.seq, "leaf_hash", computed.hex(), stored.leaf_hash.hex()
            )
        entry, effects, _ = replay.feed(stored.canonical)
        columns = (
            stored.time_us,
            stored.kind,
            stored.ref_scope,
            stored.ref_key,
            stored.corrects_seq,
        )
        wanted = (
            parse_time_us(entry["time"]),
            entry["kind"],
            entry["ref"]["scope"],
            entry["ref"]["key"],
            entry.get("corrects"),
        )
        if columns != wanted:
            raise VerificationFailed(stored.seq, "entry_columns", wanted, columns)
        for effect in effects.postings:
            row = next(postings, None)
            want = (
                stored.seq,
                effect.posting_index,
                effect.account,
                effect.unit,
                effect.amount,
                effect.balance_after,
            )
            if row != want:
                raise VerificationFailed(stored.seq, "posting_row", want, row)
        if progress is not None and replay.tree_size % 50_000 == 0:
            progress(replay.tree_size)
    extra = next(postings, None)
    if extra is not None:
        raise VerificationFailed(extra[0], "posting_row", "no such posting", extra)
    _check_head(head, replay)
    _check_derived(conn, replay, chain_id)
    return Verified(
        replay.tree_size,
        replay.root_hash(),
        bytes.fromhex(replay.state.prev_leaf_hash_hex),
        replay.state,
        dict(replay.roots_at),
        tuple(replay.frontier_hashes),
    )


def _leaf(canonical: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(b"\x00" + canonical).digest()


def _postings(conn: psycopg.Connection[Any], chain_id: str) -> Iterator[tuple[Any, ...]]:
    position = (-1, -1)
    while True:
        rows = conn.execute(
            "SELECT seq, posting_index, account, unit, amount, balance_after FROM ledger_posting"
            " WHERE chain_id = %s AND (seq, posting_index) > (%s, %s)"
            " ORDER BY seq, posting_index LIMIT %s",
            (chain_id, *position, _PAGE),
        ).fetchall()
        if not rows:
            return
        yield from (tuple(r) for r in rows)
        position = (rows[-1][0], rows[-1][1])


def _check_head(head: reads.Head, replay: Replay) -> None:
    last = replay.tree_size - 1 if replay.tree_size else None
    if head.tree_size != replay.tree_size:
        raise VerificationFailed(last, "head_tree_size", replay.tree_size, head.tree_size)
    expected_hash = bytes.fromhex(replay.state.prev_leaf_hash_hex)
    if replay.tree_size and head.head_leaf_hash != expected_hash:
        raise VerificationFailed(
            last, "head_leaf_hash", expected_hash.hex(), head.head_leaf_hash.hex()
        )
    if head.last_time_us != replay.state.last_time_us:
        raise VerificationFailed(
            last, "head_last_time", replay.state.last_time_us, head.last_time_us
        )
    if head.frontier_hashes != replay.frontier_hashes:
        raise VerificationFailed(
            last, "head_frontier", "the replayed frontier", "a different frontier"
        )


def _check_derived(conn: psycopg.Connection[Any], replay: Replay, chain_id: str) -> None:
    state = replay.state
    accounts = {
        r[0]: tuple(r[1:])
        for r in conn.execute(
            "SELECT account, unit, overdraft, lot_tracked, opened_seq FROM ledger_account"
            " WHERE chain_id = %s",
            (chain_id,),
        )
    }
    want_accounts = {
        a.name: (a.unit, a.overdraft, a.lot_tracked, a.opened_seq) for a in state.accounts.values()
    }
    _compare("account_row", want_accounts, accounts)
    balances = {
        r[0]: (r[1], r[2])
        for r in conn.execute(
            "SELECT account, balance, last_seq FROM ledger_balance WHERE chain_id = %s",
            (chain_id,),
        )
    }
    want_balances = {
        name: (amount, replay.last_seq_by_account.get(name, state.accounts[name].opened_seq))
        for name, amount in state.balances.items()
    }
    _compare("balance", want_balances, balances)
    lots = {
        r[0]: tuple(r[1:])
        for r in conn.execute(
            "SELECT lot_id, account, origin, expires_us, opened_seq, posting_index,"
            " amount_opened, remaining FROM ledger_lot WHERE chain_id = %s",
            (chain_id,),
        )
    }
    want_lots = {
        lot.lot_id: (
            lot.account,
            lot.origin,
            lot.expires_us,
            lot.opened_seq,
            lot.posting_index,
            lot.amount_opened,
            lot.remaining,
        )
        for lot in state.lots.values()
    }
    _compare("lot_row", want_lots, lots)
    holds = {
        r[0]: tuple(r[1:])
        for r in conn.execute(
            "SELECT hold_seq, account, unit, amount, expires_us, status, closed_seq"
            " FROM ledger_hold WHERE chain_id = %s",
            (chain_id,),
        )
    }
    want_holds = {
        h.hold_seq: (h.account, h.unit, h.amount, h.expires_us, h.status, h.closed_seq)
        for h in state.holds.values()
    }
    _compare("hold_row", want_holds, holds)
    nodes = {
        (r[0], r[1]): bytes(r[2])
        for r in conn.execute(
            "SELECT level, node_index, node_hash FROM ledger_merkle_node WHERE chain_id = %s",
            (chain_id,),
        )
    }
    want_nodes = {(n.level, n.index): h for n, h in replay.new_nodes}
    _compare("merkle_node", want_nodes, nodes)
    _check_refs(conn, chain_id)


def _check_refs(conn: psycopg.Connection[Any], chain_id: str) -> None:
    """Every entry's reference is in ``ledger_ref``, naming that entry, and nothing else is
    (the append's idempotency reads references there)."""
    row = conn.execute(
        "SELECT coalesce(e.seq, f.seq), e.ref_scope, e.ref_key, f.ref_scope, f.ref_key"
        " FROM (SELECT seq, ref_scope, ref_key FROM ledger_entry WHERE chain_id = %s) e"
        " FULL JOIN (SELECT seq, ref_scope, ref_key FROM ledger_ref WHERE chain_id = %s) f"
        " ON e.seq = f.seq AND e.ref_scope = f.ref_scope AND e.ref_key = f.ref_key"
        " WHERE e.seq IS NULL OR f.seq IS NULL ORDER BY 1 LIMIT 1",
        (chain_id, chain_id),
    ).fetchone()
    if row is not None:
        seq, scope, key, ref_scope, ref_key = row
        want = "absent" if scope is None else f"{scope}/{key}"
        got = "absent" if ref_scope is None else f"{ref_scope}/{ref_key}"
        raise VerificationFailed(seq, "ref_row", f"{seq}: {want}", f"{seq}: {got}")


def _compare(check: str, expected: dict[Any, Any], actual: dict[Any, Any]) -> None:
    if expected == actual:
        return
    for key in sorted(expected.keys() | actual.keys(), key=repr):
        want, got = expected.get(key, "absent"), actual.get(key, "absent")
        if want != got:
            seq = _seq_of(key)
            raise VerificationFailed(seq, check, f"{key}: {want}", f"{key}: {got}")


def _seq_of(key: Any) -> int | None:
    if isinstance(key, int):
        return key
    if isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, int) for k in key):
        level, index = key  # a Merkle node is complete once its last leaf is appended
        return int(((index + 1) << level) - 1)
    if isinstance(key, str) and ":" in key and key.split(":", 1)[0].isdigit():
        return int(key.split(":", 1)[0])  # lot ids start with the seq that opened them
    return None

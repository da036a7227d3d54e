"""Read functions over the journal: balances (now and as of a position or time), lots,
holds and entries. Settlement and the API read the journal only through these."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from ledger.journal import DEFAULT_CHAIN_ID
from ledger.state import Lot

ENTRIES_PER_PAGE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Balance:
    account: str
    unit: str
    balance: int
    held: int  # reserved by active, unexpired holds
    available: int  # balance - held; what a debit may take


@dataclass(frozen=True, slots=True)
class Head:
    tree_size: int
    head_leaf_hash: bytes
    last_time_us: int
    frontier_hashes: list[bytes]


@dataclass(frozen=True, slots=True)
class StoredEntry:
    seq: int
    time_us: int
    kind: str
    ref_scope: str
    ref_key: str
    canonical: bytes
    leaf_hash: bytes
    corrects_seq: int | None = None


Conn = psycopg.Connection[Any]


def head(conn: Conn, chain_id: str = DEFAULT_CHAIN_ID) -> Head:
    row = conn.execute(
        "SELECT tree_size, head_leaf_hash, last_time_us, frontier_hashes"
        " FROM ledger_chain WHERE chain_id = %s",
        (chain_id,),
    ).fetchone()
    if row is None:
        return Head(0, bytes(32), 0, [])
    return Head(row[0], bytes(row[1]), row[2], [bytes(h) for h in row[3]])


def balance(
    conn: Conn, account: str, now_us: int, chain_id: str = DEFAULT_CHAIN_ID
) -> Balance | None:
    row = conn.execute(
        "SELECT a.unit, b.balance, COALESCE(("
        "  SELECT sum(h.amount) FROM ledger_hold h WHERE h.chain_id = a.chain_id"
        "  AND h.account = a.account AND h.status = 'active' AND h.expires_us > %s), 0)"
        " FROM ledger_account a JOIN ledger_balance b USING (chain_id, account)"
        " WHERE a.chain_id = %s AND a.account = %s",
        (now_us, chain_id, account),
    ).fetchone()
    if row is None:
        return None
    unit, amount, held = row[0], row[1], int(row[2])
    return Balance(account, unit, amount, held, amount - held)


def balance_as_of_size(
    conn: Conn, account: str, tree_size: int, chain_id: str = DEFAULT_CHAIN_ID
) -> int:
    """The balance after the first ``tree_size`` entries (0 before the account's first move)."""
    row = conn.execute(
        "SELECT balance_after FROM ledger_posting WHERE chain_id = %s AND account = %s"
        " AND seq < %s ORDER BY seq DESC, posting_index DESC LIMIT 1",
        (chain_id, account, tree_size),
    ).fetchone()
    return 0 if row is None else int(row[0])


def size_at_time(conn: Conn, time_us: int, chain_id: str = DEFAULT_CHAIN_ID) -> int:
    """How many entries had been appended at ``time_us`` (entry times never go back)."""
    row = conn.execute(
        "SELECT max(seq) FROM ledger_entry WHERE chain_id = %s AND time_us <= %s",
        (chain_id, time_us),
    ).fetchone()
    return 0 if row is None or row[0] is None else int(row[0]) + 1


def balance_as_of_time(
    conn: Conn, account: str, time_us: int, chain_id: str = DEFAULT_CHAIN_ID
) -> int:
    return balance_as_of_size(conn, account, size_at_time(conn, time_us, chain_id), chain_id)


def lots(
    conn: Conn, account: str, *, open_only: bool = True, chain_id: str = DEFAULT_CHAIN_ID
) -> list[Lot]:
    rows = conn.execute(
        "SELECT lot_id, account, origin, expires_us, opened_seq, posting_index,"
        " amount_opened, remaining FROM ledger_lot WHERE chain_id = %s AND account = %s"
        + (" AND remaining > 0" if open_only else "")
        + " ORDER BY opened_seq, posting_index",
        (chain_id, account),
    ).fetchall()
    return [Lot(*row) for row in rows]


def entry(conn: Conn, seq: int, chain_id: str = DEFAULT_CHAIN_ID) -> StoredEntry | None:
    row = conn.execute(
        _ENTRY_COLUMNS + " FROM ledger_entry WHERE chain_id = %s AND seq = %s",
        (chain_id, seq),
    ).fetchone()
    return None if row is None else _stored(row)


def entries(conn: Conn, seqs: list[int], chain_id: str = DEFAULT_CHAIN_ID) -> list[StoredEntry]:
    """The entries at ``seqs`` that exist, in seq order (one statement for all)."""
    rows = conn.execute(
        _ENTRY_COLUMNS + " FROM ledger_entry WHERE chain_id = %s AND seq = ANY(%s) ORDER BY seq",
        (chain_id, seqs),
    ).fetchall()
    return [_stored(row) for row in rows]


def entries_page(
    conn: Conn,
    after_seq: int,
    limit: int,
    *,
    kind: str | None = None,
    ref_scope: str | None = None,
    account: str | None = None,
    chain_id: str = DEFAULT_CHAIN_ID,
) -> list[StoredEntry]:
    """Up to ``limit`` entries after ``after_seq`` (a keyset page: entries only ever come
    after it, so a page never shifts), filtered by kind, reference scope and an account
    they post to."""
    rows = conn.execute(
        _ENTRY_COLUMNS + " FROM ledger_entry e WHERE e.chain_id = %(chain)s"
        " AND e.seq > %(after)s"
        " AND (%(kind)s::text IS NULL OR e.kind = %(kind)s)"
        " AND (%(scope)s::text IS NULL OR e.ref_scope = %(scope)s)"
        " AND (%(account)s::text IS NULL OR EXISTS (SELECT 1 FROM ledger_posting p"
        "  WHERE p.chain_id = e.chain_id AND p.seq = e.seq AND p.account = %(account)s))"
        " ORDER BY e.seq LIMIT %(limit)s",
        {
            "chain": chain_id,
            "after": after_seq,
            "kind": kind,
            "scope": ref_scope,
            "account": account,
            "limit": min(limit, ENTRIES_PER_PAGE_MAX),
        },
    ).fetchall()
    return [_stored(row) for row in rows]


def entry_by_ref(
    conn: Conn, ref_scope: str, ref_key: str, chain_id: str = DEFAULT_CHAIN_ID
) -> StoredEntry | None:
    row = conn.execute(
        _ENTRY_COLUMNS + " FROM ledger_entry WHERE chain_id = %s AND seq ="
        " (SELECT seq FROM ledger_ref WHERE chain_id = %s AND ref_scope = %s AND ref_key = %s)",
        (chain_id, chain_id, ref_scope, ref_key),
    ).fetchone()
    return None if row is None else _stored(row)


def iter_entries(
    conn: Conn, start_seq: int = 0, end_seq: int | None = None, chain_id: str = DEFAULT_CHAIN_ID
) -> Iterator[StoredEntry]:
    """Entries in ``seq`` order from ``start_seq`` (inclusive) to ``end_seq`` (exclusive),
    streamed by keyset pages so memory stays flat on any journal size."""
    position = start_seq
    while True:
        limit = ENTRIES_PER_PAGE_MAX
        if end_seq is not None:
            limit = min(limit, end_seq - position)
            if limit <= 0:
                return
        rows = conn.execute(
            _ENTRY_COLUMNS + " FROM ledger_entry WHERE chain_id = %s AND seq >= %s"
            " ORDER BY seq LIMIT %s",
            (chain_id, position, limit),
        ).fetchall()
        if not rows:
            return
        for row in rows:
            yield _stored(row)
        position = rows[-1][0] + 1


_ENTRY_COLUMNS = "SELECT seq, time_us, kind, ref_scope, ref_key, canonical, leaf_hash, corrects_seq"


def _stored(row: Any) -> StoredEntry:
    return StoredEntry(row[0], row[1], row[2], row[3], row[4], bytes(row[5]), bytes(row[6]), row[7])

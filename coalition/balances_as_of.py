"""Balances as of a journal position (a seq, or a time), with what proves them: the tree
size and root hash of the journal prefix they are computed from, and the newest signed
checkpoint that holds that prefix with a consistency proof to it (RFC 9162), so a partner
can check the answer against a checkpoint it verified, or replay the export's prefix.

From the ledger's own reads: ``reads.balance_as_of_size``, ``reads.size_at_time``,
``as_of.lots_as_of_size``, ``proofs`` and ``checkpoint_log``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coalition import accounts
from coalition.context import Conn
from coalition.members import member_status
from coalition.partners import get_partner
from ledger import as_of, checkpoint_log, proofs, reads
from ledger.checkpoint_log import StoredCheckpoint
from ledger.state import Lot


class PositionUnavailable(ValueError):
    """The seq or time names no position of the journal (yet)."""


@dataclass(frozen=True, slots=True)
class Position:
    tree_size: int  # the balances are those after the first tree_size entries
    root_hash: bytes  # of the Merkle tree of those entries
    checkpoint: StoredCheckpoint | None  # newest signed one holding them (None: none yet)
    consistency_path: list[bytes] = field(default_factory=list)  # tree_size → checkpoint's


@dataclass(frozen=True, slots=True)
class AccountAsOf:
    account: str
    balance: int
    lots: list[Lot] = field(default_factory=list)


def position(conn: Conn, *, seq: int | None = None, time_us: int | None = None) -> Position:
    """After entry ``seq`` (inclusive), or after every entry stamped at or before
    ``time_us``; exactly one of them."""
    assert (seq is None) != (time_us is None), "a seq or a time"
    head = reads.head(conn)
    size_now = head.tree_size
    if seq is not None:
        if not 0 <= seq < size_now:
            raise PositionUnavailable(f"seq is 0–{size_now - 1}")
        tree_size = seq + 1
    else:
        assert time_us is not None
        if time_us >= head.last_time_us and _replaying(conn):
            # A standby may not yet hold every entry stamped by then: only one that has
            # replayed an entry stamped later has them all (entry times never go back).
            raise PositionUnavailable("this replica has not replayed that time yet")
        tree_size = reads.size_at_time(conn, time_us)
    root = proofs.root_hash_at(conn, tree_size)
    signed = checkpoint_log.covering(conn, tree_size - 1) if tree_size else None
    path: list[bytes] = []
    if signed is not None and tree_size:
        path = proofs.consistency_proof(conn, tree_size, signed.tree_size)
    return Position(tree_size, root, signed, path)


def _replaying(conn: Conn) -> bool:
    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    return bool(row and row[0])


def account_as_of(conn: Conn, account: str, tree_size: int, lots_of: str | None) -> AccountAsOf:
    """The balance, and the lots that hold points (``lots_of``: only those that issuer
    opened — what a partner may see of a member's lots)."""
    balance = reads.balance_as_of_size(conn, account, tree_size)
    lots = as_of.lots_as_of_size(conn, account, tree_size)
    if lots_of is not None:
        lots = [lot for lot in lots if lot.origin == lots_of]
    return AccountAsOf(account, balance, lots)


def member_as_of(
    conn: Conn, member_id: str, tree_size: int, lots_of: str | None
) -> AccountAsOf | None:
    if member_status(conn, member_id) is None:
        return None
    return account_as_of(conn, accounts.member(member_id), tree_size, lots_of)


def partner_as_of(conn: Conn, partner_id: str, tree_size: int) -> list[AccountAsOf] | None:
    """The partner's own accounts (points issued, points redeemed at it)."""
    if get_partner(conn, partner_id) is None:
        return None
    names = (accounts.issued(partner_id), accounts.redeemed(partner_id))
    return [account_as_of(conn, name, tree_size, None) for name in names]

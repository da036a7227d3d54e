"""Range partitions made ahead of need (docs/DESIGN.md "Partitions").

``ledger_entry``, ``ledger_posting`` and ``ledger_merkle_node`` are partitioned by chain,
then by seq range (``ledger_partition_plan.entries_per_partition`` entries a range). The
database function ``ledger_ensure_partitions`` makes ranges; this module asks it for one
whole range past each chain's head, so an append finds its range made. An append that
outruns it still succeeds: its rows go to the chain's default partition, and the next
range made starts after them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

Conn = psycopg.Connection[Any]
LOCK_TIMEOUT_MS = 2000  # attaching waits for readers of the default partition; not long


@dataclass(frozen=True, slots=True)
class Made:
    chain_id: str
    ranges_made: int
    through_seq: int  # every seq below this has its range


def entries_per_partition(conn: Conn) -> int:
    row = conn.execute("SELECT entries_per_partition FROM ledger_partition_plan").fetchone()
    assert row is not None, "ledger_partition_plan has its one row from the migration"
    return int(row[0])


def ensure_ahead(conn: Conn) -> list[Made]:
    """For every chain, make the ranges through one whole range past its head, each
    chain in its own short transaction (it queues with the chain's writers: they take the
    same lock first). A lock not granted in ``LOCK_TIMEOUT_MS`` fails the run; the next
    run tries again, and appends meanwhile go to the default partition."""
    size = entries_per_partition(conn)
    chains = conn.execute("SELECT chain_id FROM ledger_chain ORDER BY chain_id").fetchall()
    made = []
    for (chain_id,) in chains:
        with conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
            row = conn.execute(
                "SELECT ledger_ensure_partitions(chain_id, tree_size + %s)"
                " FROM ledger_chain WHERE chain_id = %s",
                (size, chain_id),
            ).fetchone()
            assert row is not None
            made.append(Made(chain_id, int(row[0]), ranges(conn, chain_id)[-1][1]))
    return made


def ranges(conn: Conn, chain_id: str) -> list[tuple[int, int]]:
    """The chain's ranges made so far, [from_seq, to_seq) in order."""
    rows = conn.execute(
        "SELECT from_seq, to_seq FROM ledger_partition WHERE chain_id = %s ORDER BY from_seq",
        (chain_id,),
    ).fetchall()
    return [(int(a), int(b)) for a, b in rows]

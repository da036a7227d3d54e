"""Grow a journal fast for the benchmarks: the rows Journal.append would write for the
transfer workload (bench._workload.transfer), computed here and sent by COPY.

Only for bench._workload's transfers between its overdraft accounts (no lots, no holds,
never rejected), so the rules have nothing to judge: canonical bytes are the JCS form of
that one shape, built directly; leaf hashes, request hashes and Merkle nodes by the
ledger's own functions. ``bench.partitions --quick`` verifies a journal grown this way
with ledger.verify_db (every row, link, node and the head), so the shortcut is checked.
"""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg

from bench._workload import ACCOUNTS_COUNT, transfer
from ledger import compact_range
from ledger.timefmt import format_time_us

Conn = psycopg.Connection[Any]
CHUNK_ENTRIES = 50_000


def grow_by_copy(conn: Conn, target_size: int, scope: str) -> None:
    """Append transfers until the chain holds ``target_size`` entries, a chunk of
    ``CHUNK_ENTRIES`` per transaction, under the chain's lock as a writer would."""
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(727001, hashtext('main'))")
            row = conn.execute(
                "SELECT tree_size, head_leaf_hash, last_time_us, frontier_hashes"
                " FROM ledger_chain WHERE chain_id = 'main' FOR UPDATE"
            ).fetchone()
            assert row is not None
            size, head, last_time_us, frontier = row
            if size >= target_size:
                return
            count = min(CHUNK_ENTRIES, target_size - size)
            _chunk(
                conn, size, bytes(head), last_time_us, [bytes(h) for h in frontier], count, scope
            )


def _chunk(
    conn: Conn,
    first_seq: int,
    prev: bytes,
    time_us: int,
    frontier: list[bytes],
    count: int,
    scope: str,
) -> None:
    balances = dict(
        conn.execute("SELECT account, balance FROM ledger_balance WHERE chain_id = 'main'")
    )
    time_text = format_time_us(time_us)
    entries, postings, leaves = [], [], []
    last_seq: dict[str, int] = {}
    for offset in range(count):
        seq = first_seq + offset
        number = seq  # unique within the scope: the entry's seq
        request = transfer(scope, number)
        source, target = request.postings
        amount = target.amount
        balances[source.account] -= amount
        balances[target.account] += amount
        # %-format: the JSON's own braces stay as they are (an f-string doubles them all).
        canonical = (
            '{"kind":"transfer","meta":{"store":"%s"},"postings":[{"account":"%s","amount":%d,'  # noqa: UP031
            '"unit":"PTS"},{"account":"%s","amount":%d,"unit":"PTS"}],"prev":"%s",'
            '"ref":{"key":"%s","scope":"%s"},"seq":%d,"time":"%s","v":1}'
            % (
                request.meta["store"],
                source.account,
                -amount,
                target.account,
                amount,
                prev.hex(),
                request.ref_key,
                scope,
                seq,
                time_text,
            )
        ).encode()
        leaf = hashlib.sha256(b"\x00" + canonical).digest()
        entries.append(
            (
                "main",
                seq,
                time_us,
                "transfer",
                scope,
                request.ref_key,
                request.request_hash(),
                canonical,
                leaf,
            )
        )
        postings.append(("main", seq, 0, source.account, "PTS", -amount, balances[source.account]))
        postings.append(("main", seq, 1, target.account, "PTS", amount, balances[target.account]))
        last_seq[source.account] = last_seq[target.account] = seq
        leaves.append(leaf)
        prev = leaf
    frontier, nodes = compact_range.append_many(frontier, first_seq, leaves)
    with conn.cursor() as cur:
        with cur.copy(
            "COPY ledger_entry (chain_id, seq, time_us, kind, ref_scope, ref_key, request_hash,"
            " canonical, leaf_hash) FROM STDIN"
        ) as copy:
            for entry in entries:
                copy.write_row(entry)
        with cur.copy("COPY ledger_ref (chain_id, ref_scope, ref_key, seq) FROM STDIN") as copy:
            for e in entries:
                copy.write_row(("main", e[4], e[5], e[1]))
        with cur.copy("COPY ledger_posting FROM STDIN") as copy:
            for posting in postings:
                copy.write_row(posting)
        with cur.copy(
            "COPY ledger_merkle_node (chain_id, level, node_index, sealed_seq, node_hash)"
            " FROM STDIN"
        ) as copy:
            for node, node_hash in nodes:
                sealed = ((node.index + 1) << node.level) - 1
                copy.write_row(("main", node.level, node.index, sealed, node_hash))
    names = sorted(last_seq)
    conn.execute(
        "UPDATE ledger_balance b SET balance = v.balance, last_seq = v.last_seq"
        " FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS v(account, balance, last_seq)"
        " WHERE b.chain_id = 'main' AND b.account = v.account",
        (names, [balances[n] for n in names], [last_seq[n] for n in names]),
    )
    assert len(balances) == ACCOUNTS_COUNT
    conn.execute(
        "UPDATE ledger_chain SET tree_size = %s, head_leaf_hash = %s, frontier_hashes = %s"
        " WHERE chain_id = 'main'",
        (first_seq + count, prev, frontier),
    )

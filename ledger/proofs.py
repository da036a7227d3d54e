"""Merkle proofs from the database: O(log n) stored nodes, fetched in one query.

Level-0 nodes are the entries' leaf hashes; higher complete subtrees are
``ledger_merkle_node`` rows written by the append path. Proof shapes come from
``ledger.merkle_proof``; this module only fetches hashes.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ledger import compact_range
from ledger.compact_range import NodeId
from ledger.journal import DEFAULT_CHAIN_ID
from ledger.merkle_hash import EMPTY_ROOT_HASH
from ledger.merkle_proof import ProofNodes, consistency_nodes, inclusion_nodes

Conn = psycopg.Connection[Any]


class ProofUnavailable(ValueError):
    """The sizes asked for are not in the tree (yet)."""


def fetch_nodes(
    conn: Conn, node_ids: list[NodeId], chain_id: str = DEFAULT_CHAIN_ID
) -> list[bytes]:
    leaves = [n.index for n in node_ids if n.level == 0]
    inner = [n for n in node_ids if n.level > 0]
    found: dict[NodeId, bytes] = {}
    if leaves:
        for seq, leaf_hash in conn.execute(
            "SELECT seq, leaf_hash FROM ledger_entry WHERE chain_id = %s AND seq = ANY(%s)",
            (chain_id, leaves),
        ):
            found[NodeId(0, seq)] = bytes(leaf_hash)
    if inner:
        for level, index, node_hash in conn.execute(
            # By the primary key (chain, sealed_seq, level): each probe reaches one range.
            "SELECT n.level, n.node_index, n.node_hash FROM ledger_merkle_node n"
            " JOIN unnest(%s::smallint[], %s::bigint[]) AS w(level, sealed_seq)"
            " ON n.level = w.level AND n.sealed_seq = w.sealed_seq WHERE n.chain_id = %s",
            ([n.level for n in inner], [((n.index + 1) << n.level) - 1 for n in inner], chain_id),
        ):
            found[NodeId(level, index)] = bytes(node_hash)
    missing = [n for n in node_ids if n not in found]
    assert not missing, f"stored tree lacks nodes {missing[:3]}: run verify"
    return [found[n] for n in node_ids]


def _tree_size(conn: Conn, chain_id: str) -> int:
    row = conn.execute(
        "SELECT tree_size FROM ledger_chain WHERE chain_id = %s", (chain_id,)
    ).fetchone()
    return 0 if row is None else int(row[0])


def _check_size(conn: Conn, tree_size: int, chain_id: str) -> None:
    current = _tree_size(conn, chain_id)
    if not 0 <= tree_size <= current:
        raise ProofUnavailable(f"tree size {tree_size} is not within 0..{current}")


def root_hash_at(conn: Conn, tree_size: int, chain_id: str = DEFAULT_CHAIN_ID) -> bytes:
    _check_size(conn, tree_size, chain_id)
    if tree_size == 0:
        return EMPTY_ROOT_HASH
    node_ids = compact_range.range_nodes(0, tree_size)
    return compact_range.root_from_subtrees(fetch_nodes(conn, node_ids, chain_id))


def inclusion_proof(
    conn: Conn, leaf_index: int, tree_size: int, chain_id: str = DEFAULT_CHAIN_ID
) -> list[bytes]:
    _check_size(conn, tree_size, chain_id)
    if not 0 <= leaf_index < tree_size:
        raise ProofUnavailable(f"entry {leaf_index} is not in a tree of {tree_size}")
    return _rehash(conn, inclusion_nodes(leaf_index, tree_size), chain_id)


def consistency_proof(
    conn: Conn, tree_size1: int, tree_size2: int, chain_id: str = DEFAULT_CHAIN_ID
) -> list[bytes]:
    _check_size(conn, tree_size2, chain_id)
    if not 0 < tree_size1 <= tree_size2:
        raise ProofUnavailable(f"no consistency proof from {tree_size1} to {tree_size2}")
    return _rehash(conn, consistency_nodes(tree_size1, tree_size2), chain_id)


def _rehash(conn: Conn, nodes: ProofNodes, chain_id: str) -> list[bytes]:
    return nodes.rehash(fetch_nodes(conn, list(nodes.node_ids), chain_id))

"""Build RFC 9162 inclusion and consistency proofs from stored complete-subtree nodes.

Only complete subtrees are stored (ledger.compact_range creates each exactly once), but a
proof may need a node on the tree's right border that is not complete yet: the
"ephemeral" node, whose hash changes with every append. Instead of storing it we fetch the
complete subtrees it is made of and hash them together. So a proof is built in three
steps, which lets the caller fetch every node with ONE batch query:

    proof_nodes = inclusion_nodes(leaf_index, tree_size)     # what to fetch
    hashes = store.fetch(proof_nodes.node_ids)               # one query, in this order
    proof = proof_nodes.rehash(hashes)                       # the RFC 9162 audit path

This mirrors transparency-dev/merkle's proof package (Nodes, Inclusion, Consistency,
Rehash). Level-0 NodeIds are leaf hashes, which live with the journal entries (leaf
`index` is entry `seq`); higher levels are the nodes compact_range.append returned.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ledger.compact_range import NodeId, range_nodes
from ledger.merkle_hash import HASH_SIZE_BYTES, node_hash


@dataclass(frozen=True, slots=True)
class ProofNodes:
    """The stored nodes a proof is made of, and how to turn their hashes into the proof.

    node_ids[ephemeral_begin:ephemeral_end] are the complete subtrees, lowest first, that
    hash together into one proof element: the node `ephemeral_node_id` on the right border,
    as much of it as exists in this tree (it may reach past the tree's end). When the proof
    needs no such element the slice is empty and `ephemeral_node_id` is None. Every other
    NodeId stands for itself in the proof.
    """

    node_ids: tuple[NodeId, ...]
    ephemeral_begin: int
    ephemeral_end: int
    ephemeral_node_id: NodeId | None

    def rehash(self, node_hashes: Sequence[bytes]) -> list[bytes]:
        """The audit path, given the hashes of `node_ids` in the same order."""
        if len(node_hashes) != len(self.node_ids):
            raise ValueError(f"got {len(node_hashes)} hashes for {len(self.node_ids)} nodes")
        for node_id, stored_hash in zip(self.node_ids, node_hashes, strict=True):
            if len(stored_hash) != HASH_SIZE_BYTES:
                raise ValueError(
                    f"hash of {node_id} must be {HASH_SIZE_BYTES} bytes, got {len(stored_hash)}"
                )
        proof: list[bytes] = []
        position = 0
        while position < len(node_hashes):
            if position == self.ephemeral_begin < self.ephemeral_end:
                # Lowest (rightmost) subtree first, so each next one is the left child.
                ephemeral_hash = node_hashes[position]
                for left_hash in node_hashes[position + 1 : self.ephemeral_end]:
                    ephemeral_hash = node_hash(left_hash, ephemeral_hash)
                proof.append(ephemeral_hash)
                position = self.ephemeral_end
            else:
                proof.append(node_hashes[position])
                position += 1
        return proof

    def rehash_from(self, node_hashes_by_id: Mapping[NodeId, bytes]) -> list[bytes]:
        """`rehash` for callers whose batch query returns the hashes keyed, in any order."""
        missing_ids = [node_id for node_id in self.node_ids if node_id not in node_hashes_by_id]
        if missing_ids:
            raise ValueError(f"missing hashes for nodes {missing_ids}")
        return self.rehash([node_hashes_by_id[node_id] for node_id in self.node_ids])


def inclusion_nodes(leaf_index: int, tree_size: int) -> ProofNodes:
    """The nodes of the inclusion proof (audit path) of leaf `leaf_index` in the tree of
    `tree_size` leaves. Requires 0 <= leaf_index < tree_size."""
    _check_count("leaf_index", leaf_index)
    _check_count("tree_size", tree_size)
    if leaf_index >= tree_size:
        raise ValueError(f"leaf_index {leaf_index} is not below tree_size {tree_size}")
    return _skip_first(_path_nodes(NodeId(0, leaf_index), tree_size))


def consistency_nodes(tree_size1: int, tree_size2: int) -> ProofNodes:
    """The nodes of the consistency proof from the tree of `tree_size1` leaves to the tree
    of `tree_size2` leaves. Requires 0 < tree_size1 <= tree_size2; equal sizes give an
    empty proof."""
    _check_count("tree_size1", tree_size1)
    _check_count("tree_size2", tree_size2)
    if tree_size1 == 0:
        raise ValueError("consistency proofs from the empty tree are not defined")
    if tree_size1 > tree_size2:
        raise ValueError(f"tree_size1 {tree_size1} is larger than tree_size2 {tree_size2}")
    if tree_size1 == tree_size2:
        return ProofNodes((), 0, 0, None)
    # The proof is the inclusion proof of the last (smallest) complete subtree of the first
    # tree in the second tree, led by that subtree's own hash, from which the verifier
    # rebuilds both roots. If the first tree is one complete subtree, the verifier already
    # has that hash as its first root, so it is left out.
    level = (tree_size1 & -tree_size1).bit_length() - 1
    path = _path_nodes(NodeId(level, (tree_size1 - 1) >> level), tree_size2)
    if tree_size1 & (tree_size1 - 1) == 0:
        return _skip_first(path)
    return path


def _path_nodes(start_node_id: NodeId, tree_size: int) -> ProofNodes:
    # `start_node_id` followed by the nodes proving it is in the tree of `tree_size` leaves
    # (transparency-dev's proof.nodes). Up to the "fork", where the path from the start
    # node parts from the path to leaf `tree_size`, siblings are complete subtrees. Above
    # it, the right-hand sibling is the ephemeral node over [fork end, tree_size) and the
    # left-hand siblings are the complete subtrees over [0, fork begin).
    level, index = start_node_id.level, start_node_id.index
    inner_count = (index ^ (tree_size >> level)).bit_length() - 1
    fork_id = NodeId(level + inner_count, index >> inner_count)

    node_ids = [start_node_id]
    node_id = start_node_id
    while node_id.level < fork_id.level:
        node_ids.append(node_id.sibling())
        node_id = node_id.parent()
    ephemeral_begin = len(node_ids)
    node_ids += reversed(range_nodes(fork_id.leaf_end, tree_size))
    ephemeral_end = len(node_ids)
    node_ids += reversed(range_nodes(0, fork_id.leaf_begin))
    ephemeral_node_id = fork_id.sibling() if ephemeral_begin < ephemeral_end else None
    return ProofNodes(tuple(node_ids), ephemeral_begin, ephemeral_end, ephemeral_node_id)


def _skip_first(proof_nodes: ProofNodes) -> ProofNodes:
    return ProofNodes(
        proof_nodes.node_ids[1:],
        proof_nodes.ephemeral_begin - 1,
        proof_nodes.ephemeral_end - 1,
        proof_nodes.ephemeral_node_id,
    )


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")

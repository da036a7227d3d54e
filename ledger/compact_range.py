"""The Merkle tree as the append path keeps it: the frontier, and the nodes it completes.

A tree of `tree_size` leaves is, left to right, one complete (perfect) subtree per 1-bit of
`tree_size`, largest first. The roots of those subtrees, the frontier, are all an append
needs: the new leaf merges with the smallest subtrees while they are the same size as what
it has grown into, like a carry rippling through a binary counter. So an append costs
O(log n) hashes no matter how long the history is, and creates on average one new complete
interior node. Complete subtrees never change once complete, which is why the caller may
store each new node once and build any later proof from stored nodes alone (see
ledger.merkle_proof). Level-0 nodes are the leaf hashes themselves; they are stored with the
journal entries, so append reports only the interior nodes (level >= 1).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ledger.merkle_hash import EMPTY_ROOT_HASH, HASH_SIZE_BYTES, node_hash


@dataclass(frozen=True, slots=True, order=True)
class NodeId:
    """The root of the complete subtree over leaves [index·2^level, (index+1)·2^level)."""

    level: int
    index: int

    @property
    def leaf_begin(self) -> int:
        return self.index << self.level

    @property
    def leaf_end(self) -> int:
        """One past the last leaf covered (exclusive)."""
        return (self.index + 1) << self.level

    def parent(self) -> "NodeId":
        return NodeId(self.level + 1, self.index >> 1)

    def sibling(self) -> "NodeId":
        return NodeId(self.level, self.index ^ 1)


def append(
    frontier_hashes: Sequence[bytes], tree_size: int, leaf_hash: bytes
) -> tuple[list[bytes], list[tuple[NodeId, bytes]]]:
    """Add one leaf to the tree of `tree_size` leaves described by `frontier_hashes`.

    Returns the frontier of the tree of `tree_size + 1` leaves and the complete interior
    nodes the new leaf created, lowest first, which the caller must store. The input
    sequence is left unchanged.
    """
    new_frontier_hashes = list(frontier_hashes)
    new_nodes = _append_in_place(new_frontier_hashes, tree_size, leaf_hash)
    return new_frontier_hashes, new_nodes


def append_many(
    frontier_hashes: Sequence[bytes], tree_size: int, leaf_hashes: Iterable[bytes]
) -> tuple[list[bytes], list[tuple[NodeId, bytes]]]:
    """`append` for each of `leaf_hashes` in turn; the new nodes come in creation order."""
    new_frontier_hashes = list(frontier_hashes)
    new_nodes: list[tuple[NodeId, bytes]] = []
    for leaf_hash in leaf_hashes:
        new_nodes += _append_in_place(new_frontier_hashes, tree_size, leaf_hash)
        tree_size += 1
    return new_frontier_hashes, new_nodes


def root_hash(frontier_hashes: Sequence[bytes], tree_size: int) -> bytes:
    """The RFC 6962 root hash (MTH) of the tree of `tree_size` leaves with this frontier."""
    _check_frontier(frontier_hashes, tree_size)
    if tree_size == 0:
        return EMPTY_ROOT_HASH
    return root_from_subtrees(frontier_hashes)


def root_from_subtrees(subtree_hashes: Sequence[bytes]) -> bytes:
    """Combine the roots of consecutive complete subtrees, largest first, each at most
    the size of the one before it (the shape of any frontier), into one root hash."""
    if not subtree_hashes:
        raise ValueError("at least one subtree hash is needed; the empty tree has no subtrees")
    # RFC 6962 splits a tree at its largest power of two, which is the first subtree; the
    # rest, split the same way, is everything to its right. Folding from the right
    # therefore builds exactly the ephemeral nodes along the right border.
    accumulated_hash = subtree_hashes[-1]
    for subtree_hash in reversed(subtree_hashes[:-1]):
        accumulated_hash = node_hash(subtree_hash, accumulated_hash)
    return accumulated_hash


def frontier_nodes(tree_size: int) -> list[NodeId]:
    """The NodeIds of the frontier of a tree of `tree_size` leaves, largest first: what
    to fetch from the node store to resume appending, e.g. after a restart."""
    _check_count("tree_size", tree_size)
    return range_nodes(0, tree_size)


def range_nodes(leaf_begin: int, leaf_end: int) -> list[NodeId]:
    """The fewest complete subtrees that exactly cover leaves [leaf_begin, leaf_end), left
    to right. Their sizes rise then fall, so there are at most 2·log2(size) of them."""
    _check_count("leaf_begin", leaf_begin)
    _check_count("leaf_end", leaf_end)
    if leaf_begin > leaf_end:
        raise ValueError(f"leaf_begin {leaf_begin} is after leaf_end {leaf_end}")
    node_ids: list[NodeId] = []
    position = leaf_begin
    while position < leaf_end:
        # The largest subtree starting at `position` is limited by its alignment (the
        # lowest 1-bit of position) and by how many leaves remain.
        level = (leaf_end - position).bit_length() - 1
        if position:
            level = min(level, (position & -position).bit_length() - 1)
        node_ids.append(NodeId(level, position >> level))
        position += 1 << level
    return node_ids


def _append_in_place(
    frontier_hashes: list[bytes], tree_size: int, leaf_hash: bytes
) -> list[tuple[NodeId, bytes]]:
    _check_frontier(frontier_hashes, tree_size)
    if len(leaf_hash) != HASH_SIZE_BYTES:
        raise ValueError(f"leaf_hash must be {HASH_SIZE_BYTES} bytes, got {len(leaf_hash)}")
    new_nodes: list[tuple[NodeId, bytes]] = []
    carry_hash = leaf_hash
    node_id = NodeId(0, tree_size)
    # Each trailing 1-bit of tree_size is a subtree as large as the carry: merge them.
    while node_id.index & 1:
        carry_hash = node_hash(frontier_hashes.pop(), carry_hash)
        node_id = node_id.parent()
        new_nodes.append((node_id, carry_hash))
    frontier_hashes.append(carry_hash)
    return new_nodes


def _check_frontier(frontier_hashes: Sequence[bytes], tree_size: int) -> None:
    _check_count("tree_size", tree_size)
    expected_count = tree_size.bit_count()
    if len(frontier_hashes) != expected_count:
        raise ValueError(
            f"a tree of {tree_size} leaves has {expected_count} frontier hashes, "
            f"got {len(frontier_hashes)}"
        )


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")

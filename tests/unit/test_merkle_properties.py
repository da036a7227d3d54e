"""Properties of the Merkle code on random trees, including trees far too big to build.

Proofs for enormous trees are checked for shape only: their node hashes are made up, so
verification must fail, but always with "root_mismatch" and never with a length error,
which shows that the builder and the verifier agree on every proof's length.
"""

import hashlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.compact_range import (
    NodeId,
    append_many,
    frontier_nodes,
    range_nodes,
    root_from_subtrees,
    root_hash,
)
from ledger.merkle_hash import leaf_hash
from ledger.merkle_proof import consistency_nodes, inclusion_nodes
from ledger.merkle_verify import ProofError, verify_consistency, verify_inclusion

HUGE_TREE_SIZE = 1 << 80


def _made_up_hash(node_id: NodeId) -> bytes:
    return hashlib.sha256(f"{node_id.level}/{node_id.index}".encode()).digest()


def _assert_complete_and_inside(node_ids: tuple[NodeId, ...], tree_size: int) -> None:
    assert len(node_ids) <= 2 * tree_size.bit_length()
    assert len(set(node_ids)) == len(node_ids)
    assert all(node_id.leaf_end <= tree_size for node_id in node_ids)


@st.composite
def _leaf_and_size(draw: st.DrawFn, max_tree_size: int) -> tuple[int, int]:
    tree_size = draw(st.integers(min_value=1, max_value=max_tree_size))
    return draw(st.integers(min_value=0, max_value=tree_size - 1)), tree_size


@st.composite
def _two_sizes(draw: st.DrawFn, max_tree_size: int) -> tuple[int, int]:
    tree_size2 = draw(st.integers(min_value=1, max_value=max_tree_size))
    return draw(st.integers(min_value=1, max_value=tree_size2)), tree_size2


@settings(max_examples=300)
@given(_leaf_and_size(HUGE_TREE_SIZE))
def test_huge_inclusion_proofs_have_the_length_the_verifier_expects(
    leaf_and_size: tuple[int, int],
) -> None:
    leaf_index, tree_size = leaf_and_size
    proof_nodes = inclusion_nodes(leaf_index, tree_size)
    _assert_complete_and_inside(proof_nodes.node_ids, tree_size)
    proof = proof_nodes.rehash([_made_up_hash(node_id) for node_id in proof_nodes.node_ids])
    some_root = _made_up_hash(NodeId(999, 0))
    leaf = _made_up_hash(NodeId(0, leaf_index))
    with pytest.raises(ProofError) as raised:
        verify_inclusion(leaf, leaf_index, tree_size, proof, some_root)
    assert raised.value.code == "root_mismatch"


@settings(max_examples=300)
@given(_two_sizes(HUGE_TREE_SIZE))
def test_huge_consistency_proofs_have_the_length_the_verifier_expects(
    two_sizes: tuple[int, int],
) -> None:
    tree_size1, tree_size2 = two_sizes
    proof_nodes = consistency_nodes(tree_size1, tree_size2)
    _assert_complete_and_inside(proof_nodes.node_ids, tree_size2)
    proof = proof_nodes.rehash([_made_up_hash(node_id) for node_id in proof_nodes.node_ids])
    some_root1, some_root2 = _made_up_hash(NodeId(999, 1)), _made_up_hash(NodeId(999, 2))
    with pytest.raises(ProofError) as raised:
        verify_consistency(tree_size1, tree_size2, proof, some_root1, some_root2)
    assert raised.value.code == "root_mismatch"


@given(st.integers(min_value=0, max_value=HUGE_TREE_SIZE), st.integers(min_value=0, max_value=64))
def test_range_nodes_tile_the_range_with_complete_subtrees(leaf_begin: int, length: int) -> None:
    leaf_end = leaf_begin + length
    node_ids = range_nodes(leaf_begin, leaf_end)
    position = leaf_begin
    for node_id in node_ids:
        assert node_id.leaf_begin == position
        position = node_id.leaf_end
    assert position == leaf_end
    # Fewest pieces: no two neighbours of one size could have been merged into their parent.
    for left, right in itertools.pairwise(node_ids):
        assert not (left.level == right.level and left.parent() == right.parent())


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=200), st.data())
def test_random_trees_prove_every_claim_they_hold(
    leaf_data: list[bytes], data: st.DataObject
) -> None:
    leaf_hashes = [leaf_hash(entry) for entry in leaf_data]
    store = {NodeId(0, seq): h for seq, h in enumerate(leaf_hashes)}
    # Appending in batches of random sizes must store the same nodes as any other split.
    frontier_hashes: list[bytes] = []
    root_hashes_by_size = {0: root_hash(frontier_hashes, 0)}
    tree_size = 0
    while tree_size < len(leaf_hashes):
        batch_size = data.draw(st.integers(min_value=1, max_value=len(leaf_hashes) - tree_size))
        batch = leaf_hashes[tree_size : tree_size + batch_size]
        frontier_hashes, new_nodes = append_many(frontier_hashes, tree_size, batch)
        store.update(new_nodes)
        tree_size += batch_size
        root_hashes_by_size[tree_size] = root_hash(frontier_hashes, tree_size)

    leaf_index = data.draw(st.integers(min_value=0, max_value=tree_size - 1))
    proof = inclusion_nodes(leaf_index, tree_size).rehash_from(store)
    verify_inclusion(
        leaf_hashes[leaf_index], leaf_index, tree_size, proof, root_hashes_by_size[tree_size]
    )

    # The root of any earlier size can be rebuilt from stored nodes alone.
    tree_size1 = data.draw(st.integers(min_value=1, max_value=tree_size))
    root_hash1 = root_from_subtrees([store[node_id] for node_id in frontier_nodes(tree_size1)])
    assert root_hashes_by_size.get(tree_size1, root_hash1) == root_hash1
    proof = consistency_nodes(tree_size1, tree_size).rehash_from(store)
    verify_consistency(tree_size1, tree_size, proof, root_hash1, root_hashes_by_size[tree_size])

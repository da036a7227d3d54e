"""Tampered and malformed proofs are refused, each with the ProofError code that names why.

The trees here are built with ledger.compact_range, which test_merkle.py checks against
the RFC 6962 reference; these tests are about what the verifier and the builders refuse.
"""

import hashlib

import pytest

from ledger.compact_range import (
    NodeId,
    append,
    append_many,
    frontier_nodes,
    range_nodes,
    root_from_subtrees,
    root_hash,
)
from ledger.merkle_hash import leaf_hash
from ledger.merkle_proof import consistency_nodes, inclusion_nodes
from ledger.merkle_verify import (
    ProofError,
    root_from_consistency_proof,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

TREE_SIZE = 37
LEAF_HASHES = [leaf_hash(seq.to_bytes(4, "big")) for seq in range(TREE_SIZE)]
SOME_HASH = hashlib.sha256(b"not in any tree").digest()


def _build_store() -> tuple[dict[NodeId, bytes], list[bytes]]:
    store = {NodeId(0, seq): h for seq, h in enumerate(LEAF_HASHES)}
    frontier_hashes: list[bytes] = []
    roots = [root_hash(frontier_hashes, 0)]
    for tree_size, leaf in enumerate(LEAF_HASHES):
        frontier_hashes, new_nodes = append(frontier_hashes, tree_size, leaf)
        store.update(new_nodes)
        roots.append(root_hash(frontier_hashes, tree_size + 1))
    return store, roots


STORE, ROOTS = _build_store()

# Leaves at both edges, in the middle, and on a complete right-edge subtree.
INCLUSION_CASES = [(0, 1), (0, 2), (1, 2), (0, 8), (7, 8), (5, 8), (4, 5), (12, 37), (36, 37)]
# Sizes that are and are not powers of two, on both sides.
CONSISTENCY_CASES = [(1, 2), (1, 8), (2, 5), (4, 8), (6, 8), (6, 7), (3, 37), (16, 37), (35, 36)]


def _inclusion_proof(leaf_index: int, tree_size: int) -> list[bytes]:
    return inclusion_nodes(leaf_index, tree_size).rehash_from(STORE)


def _consistency_proof(tree_size1: int, tree_size2: int) -> list[bytes]:
    return consistency_nodes(tree_size1, tree_size2).rehash_from(STORE)


def _flip_bit(value: bytes, bit_position: int) -> bytes:
    flipped = bytearray(value)
    flipped[bit_position // 8] ^= 1 << (bit_position % 8)
    return bytes(flipped)


def _code_for_length(proof_length: int, expected_length: int) -> str:
    # The proof's shape depends only on the sizes, so a proof of the right length that
    # does not hold is a root mismatch, and any other length is named as such.
    if proof_length > expected_length:
        return "proof_too_long"
    if proof_length < expected_length:
        return "proof_too_short"
    return "root_mismatch"


def _inclusion_error(
    leaf: bytes, leaf_index: int, tree_size: int, proof: list[bytes], root: bytes
) -> ProofError:
    with pytest.raises(ProofError) as raised:
        verify_inclusion(leaf, leaf_index, tree_size, proof, root)
    return raised.value


def _consistency_error(
    tree_size1: int, tree_size2: int, proof: list[bytes], root1: bytes, root2: bytes
) -> ProofError:
    with pytest.raises(ProofError) as raised:
        verify_consistency(tree_size1, tree_size2, proof, root1, root2)
    return raised.value


# --- inclusion --------------------------------------------------------------------------


@pytest.mark.parametrize(("leaf_index", "tree_size"), INCLUSION_CASES)
def test_inclusion_untampered_proof_verifies(leaf_index: int, tree_size: int) -> None:
    proof = _inclusion_proof(leaf_index, tree_size)
    verify_inclusion(LEAF_HASHES[leaf_index], leaf_index, tree_size, proof, ROOTS[tree_size])
    assert (
        root_from_inclusion_proof(LEAF_HASHES[leaf_index], leaf_index, tree_size, tuple(proof))
        == (ROOTS[tree_size])
    )


@pytest.mark.parametrize(("leaf_index", "tree_size"), INCLUSION_CASES)
def test_inclusion_any_flipped_bit_is_a_root_mismatch(leaf_index: int, tree_size: int) -> None:
    proof = _inclusion_proof(leaf_index, tree_size)
    leaf, root = LEAF_HASHES[leaf_index], ROOTS[tree_size]
    for bit_position in range(256):
        for position in range(len(proof)):
            tampered = list(proof)
            tampered[position] = _flip_bit(proof[position], bit_position)
            error = _inclusion_error(leaf, leaf_index, tree_size, tampered, root)
            assert error.code == "root_mismatch"
        tampered_leaf = _flip_bit(leaf, bit_position)
        assert _inclusion_error(tampered_leaf, leaf_index, tree_size, proof, root).code == (
            "root_mismatch"
        )
        tampered_root = _flip_bit(root, bit_position)
        assert _inclusion_error(leaf, leaf_index, tree_size, proof, tampered_root).code == (
            "root_mismatch"
        )


@pytest.mark.parametrize(("leaf_index", "tree_size"), INCLUSION_CASES)
def test_inclusion_wrong_index_or_size_is_refused(leaf_index: int, tree_size: int) -> None:
    proof = _inclusion_proof(leaf_index, tree_size)
    leaf, root = LEAF_HASHES[leaf_index], ROOTS[tree_size]
    # Sizes change by a factor of two only: a root does not commit to the tree's size, so
    # the same path can hold for neighbouring sizes (the signed checkpoint binds the two).
    claims = {(leaf_index - 1, tree_size), (leaf_index + 1, tree_size), (leaf_index ^ 2, tree_size)}
    claims |= {(leaf_index, tree_size // 2), (leaf_index, tree_size * 2)}
    for wrong_index, wrong_size in claims:
        if not 0 <= wrong_index < wrong_size <= TREE_SIZE:
            continue
        expected_code = _code_for_length(len(proof), len(_inclusion_proof(wrong_index, wrong_size)))
        assert _inclusion_error(leaf, wrong_index, wrong_size, proof, root).code == expected_code


@pytest.mark.parametrize(("leaf_index", "tree_size"), INCLUSION_CASES)
def test_inclusion_extra_or_missing_hashes_are_refused(leaf_index: int, tree_size: int) -> None:
    proof = _inclusion_proof(leaf_index, tree_size)
    leaf, root = LEAF_HASHES[leaf_index], ROOTS[tree_size]
    for longer in ([*proof, root], [*proof, SOME_HASH], [SOME_HASH, *proof], [root, *proof]):
        assert _inclusion_error(leaf, leaf_index, tree_size, longer, root).code == (
            "proof_too_long"
        )
    if proof:
        for shorter in (proof[:-1], proof[1:], []):
            assert _inclusion_error(leaf, leaf_index, tree_size, shorter, root).code == (
                "proof_too_short"
            )


def test_inclusion_hashes_of_wrong_length_are_refused() -> None:
    proof = _inclusion_proof(12, 37)
    leaf, root = LEAF_HASHES[12], ROOTS[37]
    for bad in (b"", proof[0][:31], proof[0] + b"\x00", proof[0].hex()):
        bad_hash: bytes = bad  # type: ignore[assignment]  # a str, as a careless caller might
        cases = [
            (bad_hash, proof, root),
            (leaf, [bad_hash, *proof[1:]], root),
            (leaf, [*proof[:-1], bad_hash], root),
            (leaf, proof, bad_hash),
        ]
        for leaf_arg, proof_arg, root_arg in cases:
            error = _inclusion_error(leaf_arg, 12, 37, proof_arg, root_arg)
            assert error.code == "wrong_hash_length"


@pytest.mark.parametrize(
    ("leaf_index", "tree_size", "code"),
    [
        (0, 0, "index_out_of_range"),
        (1, 1, "index_out_of_range"),
        (8, 8, "index_out_of_range"),
        (9, 8, "index_out_of_range"),
        (-1, 8, "index_out_of_range"),
        (0, -1, "size_negative"),
        (True, 8, "not_an_integer"),
        (1.0, 8, "not_an_integer"),
    ],
)
def test_inclusion_bad_index_or_size_is_refused(leaf_index: int, tree_size: int, code: str) -> None:
    error = _inclusion_error(LEAF_HASHES[0], leaf_index, tree_size, [], ROOTS[1])
    assert error.code == code
    assert isinstance(error, ValueError)
    assert str(error)


# --- consistency ------------------------------------------------------------------------


@pytest.mark.parametrize(("tree_size1", "tree_size2"), CONSISTENCY_CASES)
def test_consistency_untampered_proof_verifies(tree_size1: int, tree_size2: int) -> None:
    proof = _consistency_proof(tree_size1, tree_size2)
    verify_consistency(tree_size1, tree_size2, proof, ROOTS[tree_size1], ROOTS[tree_size2])
    assert (
        root_from_consistency_proof(tree_size1, tree_size2, tuple(proof), ROOTS[tree_size1])
        == (ROOTS[tree_size2])
    )


@pytest.mark.parametrize(("tree_size1", "tree_size2"), CONSISTENCY_CASES)
def test_consistency_any_flipped_bit_is_a_root_mismatch(tree_size1: int, tree_size2: int) -> None:
    proof = _consistency_proof(tree_size1, tree_size2)
    root1, root2 = ROOTS[tree_size1], ROOTS[tree_size2]
    for bit_position in range(256):
        for position in range(len(proof)):
            tampered = list(proof)
            tampered[position] = _flip_bit(proof[position], bit_position)
            error = _consistency_error(tree_size1, tree_size2, tampered, root1, root2)
            assert error.code == "root_mismatch"
        for wrong_root1, wrong_root2 in (
            (_flip_bit(root1, bit_position), root2),
            (root1, _flip_bit(root2, bit_position)),
        ):
            error = _consistency_error(tree_size1, tree_size2, proof, wrong_root1, wrong_root2)
            assert error.code == "root_mismatch"


@pytest.mark.parametrize(("tree_size1", "tree_size2"), CONSISTENCY_CASES)
def test_consistency_swapped_roots_or_wrong_sizes_are_refused(
    tree_size1: int, tree_size2: int
) -> None:
    proof = _consistency_proof(tree_size1, tree_size2)
    root1, root2 = ROOTS[tree_size1], ROOTS[tree_size2]
    assert _consistency_error(tree_size1, tree_size2, proof, root2, root1).code == ("root_mismatch")
    # As for inclusion, tree_size2 changes by a factor of two only: the 1 -> 8 proof also
    # "proves" 1 -> 7 with the root of 8, since the path has the same shape.
    claims = {
        (tree_size1 - 1, tree_size2),
        (tree_size1 + 1, tree_size2),
        (tree_size1 ^ 2, tree_size2),
    }
    claims |= {(tree_size1, tree_size2 // 2), (tree_size1, tree_size2 * 2)}
    for wrong_size1, wrong_size2 in claims:
        if not 0 < wrong_size1 <= wrong_size2 <= TREE_SIZE:
            continue
        expected_length = len(_consistency_proof(wrong_size1, wrong_size2))
        error = _consistency_error(wrong_size1, wrong_size2, proof, root1, root2)
        assert error.code == _code_for_length(len(proof), expected_length)


@pytest.mark.parametrize(("tree_size1", "tree_size2"), CONSISTENCY_CASES)
def test_consistency_extra_or_missing_hashes_are_refused(tree_size1: int, tree_size2: int) -> None:
    proof = _consistency_proof(tree_size1, tree_size2)
    root1, root2 = ROOTS[tree_size1], ROOTS[tree_size2]
    # A leading root1 is what a builder that forgot the power-of-two rule would send.
    for longer in ([*proof, root1], [*proof, root2], [*proof, SOME_HASH], [root1, *proof]):
        error = _consistency_error(tree_size1, tree_size2, longer, root1, root2)
        assert error.code == "proof_too_long"
    for shorter in (proof[:-1], proof[1:], []):
        error = _consistency_error(tree_size1, tree_size2, shorter, root1, root2)
        assert error.code == "proof_too_short"


def test_consistency_hashes_of_wrong_length_are_refused() -> None:
    proof = _consistency_proof(3, 37)
    root1, root2 = ROOTS[3], ROOTS[37]
    for bad in (b"", proof[0][:31], proof[0] + b"\x00"):
        cases = [
            ([bad, *proof[1:]], root1, root2),
            ([*proof[:-1], bad], root1, root2),
            (proof, bad, root2),
            (proof, root1, bad),
        ]
        for proof_arg, root1_arg, root2_arg in cases:
            error = _consistency_error(3, 37, proof_arg, root1_arg, root2_arg)
            assert error.code == "wrong_hash_length"


@pytest.mark.parametrize(
    ("tree_size1", "tree_size2", "code"),
    [
        (0, 0, "size_zero"),
        (0, 1, "size_zero"),
        (0, 37, "size_zero"),
        (2, 1, "size_decreasing"),
        (37, 36, "size_decreasing"),
        (-1, 5, "size_negative"),
        (1, -5, "size_negative"),
        (1, 2.0, "not_an_integer"),
    ],
)
def test_consistency_bad_sizes_are_refused(tree_size1: int, tree_size2: int, code: str) -> None:
    proof = [SOME_HASH]
    error = _consistency_error(tree_size1, tree_size2, proof, ROOTS[1], ROOTS[2])
    assert error.code == code
    assert str(error)


def test_consistency_between_equal_sizes_needs_empty_proof_and_equal_roots() -> None:
    verify_consistency(5, 5, [], ROOTS[5], ROOTS[5])
    assert _consistency_error(5, 5, [ROOTS[5]], ROOTS[5], ROOTS[5]).code == "proof_too_long"
    assert _consistency_error(5, 5, [], ROOTS[5], ROOTS[6]).code == "root_mismatch"
    assert _consistency_proof(5, 5) == []


# --- the builders refuse what the verifier would refuse ---------------------------------


@pytest.mark.parametrize(("leaf_index", "tree_size"), [(0, 0), (5, 5), (6, 5), (-1, 5), (0, -1)])
def test_inclusion_nodes_bad_arguments(leaf_index: int, tree_size: int) -> None:
    with pytest.raises(ValueError, match=r"leaf_index|tree_size"):
        inclusion_nodes(leaf_index, tree_size)


@pytest.mark.parametrize(("tree_size1", "tree_size2"), [(0, 0), (0, 5), (6, 5), (-1, 5), (1, -1)])
def test_consistency_nodes_bad_arguments(tree_size1: int, tree_size2: int) -> None:
    with pytest.raises(ValueError, match=r"tree_size|empty tree"):
        consistency_nodes(tree_size1, tree_size2)


def test_builders_refuse_non_integers() -> None:
    with pytest.raises(TypeError):
        inclusion_nodes(True, 5)
    with pytest.raises(TypeError):
        consistency_nodes(1, 5.0)  # type: ignore[arg-type]


def test_rehash_refuses_wrong_count_or_length_or_missing_nodes() -> None:
    proof_nodes = inclusion_nodes(12, 37)
    node_hashes = [STORE[node_id] for node_id in proof_nodes.node_ids]
    with pytest.raises(ValueError, match="hashes for"):
        proof_nodes.rehash(node_hashes[:-1])
    with pytest.raises(ValueError, match="32 bytes"):
        proof_nodes.rehash([*node_hashes[:-1], node_hashes[-1][:31]])
    partial_store = {proof_nodes.node_ids[0]: node_hashes[0]}
    with pytest.raises(ValueError, match="missing"):
        proof_nodes.rehash_from(partial_store)


# --- compact_range refuses a frontier that does not fit the size -------------------------


def test_append_refuses_mismatched_frontier_or_leaf() -> None:
    frontier_hashes, _ = append_many([], 0, LEAF_HASHES[:5])
    with pytest.raises(ValueError, match="frontier"):
        append(frontier_hashes, 7, LEAF_HASHES[5])
    with pytest.raises(ValueError, match="frontier"):
        root_hash(frontier_hashes[:1], 5)
    with pytest.raises(ValueError, match="32 bytes"):
        append(frontier_hashes, 5, LEAF_HASHES[5][:31])
    with pytest.raises(ValueError, match="negative"):
        append([], -1, LEAF_HASHES[0])
    # A failed append leaves the caller's frontier as it was.
    assert len(frontier_hashes) == 2


def test_range_helpers_refuse_bad_ranges() -> None:
    with pytest.raises(ValueError, match="after"):
        range_nodes(5, 3)
    with pytest.raises(ValueError, match="negative"):
        frontier_nodes(-1)
    with pytest.raises(ValueError, match="at least one"):
        root_from_subtrees([])

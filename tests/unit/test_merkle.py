"""The Merkle tree code against a naive transcription of RFC 6962 section 2.1.

The reference below is written straight from the RFC's recursive definitions (MTH, PATH,
PROOF) with hashlib, sharing no code with ledger/, so a bug would have to be made twice,
in two different shapes, to go unnoticed. Every tree size up to MAX_TREE_SIZE, every
leaf index and every pair of sizes is checked; all trees are prefixes of one fixed list
of leaves, which lets the reference memoise subtree hashes and the node store be shared.
"""

import hashlib
from collections.abc import Sequence

import pytest

from ledger.compact_range import NodeId, append, append_many, frontier_nodes, root_hash
from ledger.merkle_hash import EMPTY_ROOT_HASH, HASH_SIZE_BYTES, leaf_hash, node_hash
from ledger.merkle_proof import ProofNodes, consistency_nodes, inclusion_nodes
from ledger.merkle_verify import verify_consistency, verify_inclusion

MAX_TREE_SIZE = 300

LEAF_DATA = [f"entry {seq}".encode() * (seq % 3) for seq in range(MAX_TREE_SIZE)]


# --- the reference: RFC 6962 section 2.1 ------------------------------------------------


def _largest_power_of_two_below(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


class ReferenceTree:
    """MTH, PATH and PROOF as RFC 6962 defines them, over D = leaf_data; D[begin:end] is
    passed as the pair (begin, end) so that subtree hashes can be memoised."""

    def __init__(self, leaf_data: Sequence[bytes]) -> None:
        self._leaf_data = leaf_data
        self._mth_cache: dict[tuple[int, int], bytes] = {}

    def mth(self, begin: int, end: int) -> bytes:
        """MTH(D[begin:end])."""
        if (begin, end) not in self._mth_cache:
            n = end - begin
            if n == 0:
                result = hashlib.sha256(b"").digest()
            elif n == 1:
                result = hashlib.sha256(b"\x00" + self._leaf_data[begin]).digest()
            else:
                k = _largest_power_of_two_below(n)
                left, right = self.mth(begin, begin + k), self.mth(begin + k, end)
                result = hashlib.sha256(b"\x01" + left + right).digest()
            self._mth_cache[begin, end] = result
        return self._mth_cache[begin, end]

    def path(self, m: int, begin: int, end: int) -> list[bytes]:
        """PATH(m, D[begin:end])."""
        n = end - begin
        if n == 1:
            return []
        k = _largest_power_of_two_below(n)
        if m < k:
            return [*self.path(m, begin, begin + k), self.mth(begin + k, end)]
        return [*self.path(m - k, begin + k, end), self.mth(begin, begin + k)]

    def proof(self, m: int, n: int) -> list[bytes]:
        """PROOF(m, D[0:n])."""
        return self._subproof(m, 0, n, True)

    def _subproof(self, m: int, begin: int, end: int, b: bool) -> list[bytes]:
        """SUBPROOF(m, D[begin:end], b)."""
        n = end - begin
        if m == n:
            return [] if b else [self.mth(begin, end)]
        k = _largest_power_of_two_below(n)
        if m <= k:
            return [*self._subproof(m, begin, begin + k, b), self.mth(begin + k, end)]
        return [*self._subproof(m - k, begin + k, end, False), self.mth(begin, begin + k)]


REFERENCE = ReferenceTree(LEAF_DATA)


def _reference_node_store() -> dict[NodeId, bytes]:
    # Every complete subtree of the largest tree, leaves included, as a database would
    # hold them; smaller trees use the same nodes because complete subtrees never change.
    store: dict[NodeId, bytes] = {}
    level = 0
    while 1 << level <= MAX_TREE_SIZE:
        for index in range(MAX_TREE_SIZE >> level):
            store[NodeId(level, index)] = REFERENCE.mth(index << level, (index + 1) << level)
        level += 1
    return store


NODE_STORE = _reference_node_store()
LEAF_HASHES = [NODE_STORE[NodeId(0, seq)] for seq in range(MAX_TREE_SIZE)]


def _fetch(node_ids: tuple[NodeId, ...], tree_size: int) -> list[bytes]:
    # A proof for a tree of tree_size leaves must never need a node beyond its end: such a
    # node would not exist yet when the proof is served.
    assert all(node_id.leaf_end <= tree_size for node_id in node_ids)
    return [NODE_STORE[node_id] for node_id in node_ids]


# --- pinned hashes: anyone can reproduce these with a shell ----------------------------


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    # printf '' | sha256sum
    assert EMPTY_ROOT_HASH.hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert root_hash([], 0) == EMPTY_ROOT_HASH


def test_leaf_hash_of_empty_leaf() -> None:
    # printf '\x00' | sha256sum
    assert leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert len(leaf_hash(b"")) == HASH_SIZE_BYTES


def test_node_hash_of_two_leaves() -> None:
    # (printf '\x01'; printf '\x00' | openssl dgst -sha256 -binary;
    #  printf '\x00\x00' | openssl dgst -sha256 -binary) | sha256sum
    assert node_hash(leaf_hash(b""), leaf_hash(b"\x00")).hex() == (
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"
    )


# --- the RFC 6962 test vectors of certificate-transparency-go and transparency-dev/merkle
# (proof/verify_test.go): eight leaves, the roots of their prefixes, and some proofs.

RFC6962_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
RFC6962_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (0-based leaf_index, tree_size, audit path)
RFC6962_INCLUSION_PROOFS = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (tree_size1, tree_size2, consistency proof)
RFC6962_CONSISTENCY_PROOFS = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def _rfc6962_tree() -> tuple[list[bytes], dict[NodeId, bytes]]:
    # Built with our own append path, so the vectors pin compact_range too.
    frontier_hashes: list[bytes] = []
    store: dict[NodeId, bytes] = {}
    roots: list[bytes] = []
    for leaf_index, data in enumerate(RFC6962_LEAVES):
        store[NodeId(0, leaf_index)] = leaf_hash(data)
        frontier_hashes, new_nodes = append(frontier_hashes, leaf_index, leaf_hash(data))
        store.update(new_nodes)
        roots.append(root_hash(frontier_hashes, leaf_index + 1))
    return roots, store


def test_rfc6962_vector_roots() -> None:
    roots, _ = _rfc6962_tree()
    assert [root.hex() for root in roots] == RFC6962_ROOTS


@pytest.mark.parametrize(("leaf_index", "tree_size", "expected_proof"), RFC6962_INCLUSION_PROOFS)
def test_rfc6962_vector_inclusion_proofs(
    leaf_index: int, tree_size: int, expected_proof: list[str]
) -> None:
    _, store = _rfc6962_tree()
    proof = inclusion_nodes(leaf_index, tree_size).rehash_from(store)
    assert [proof_hash.hex() for proof_hash in proof] == expected_proof
    root = bytes.fromhex(RFC6962_ROOTS[tree_size - 1])
    verify_inclusion(leaf_hash(RFC6962_LEAVES[leaf_index]), leaf_index, tree_size, proof, root)


@pytest.mark.parametrize(("tree_size1", "tree_size2", "expected_proof"), RFC6962_CONSISTENCY_PROOFS)
def test_rfc6962_vector_consistency_proofs(
    tree_size1: int, tree_size2: int, expected_proof: list[str]
) -> None:
    _, store = _rfc6962_tree()
    proof = consistency_nodes(tree_size1, tree_size2).rehash_from(store)
    assert [proof_hash.hex() for proof_hash in proof] == expected_proof
    root1 = bytes.fromhex(RFC6962_ROOTS[tree_size1 - 1])
    root2 = bytes.fromhex(RFC6962_ROOTS[tree_size2 - 1])
    verify_consistency(tree_size1, tree_size2, proof, root1, root2)


# --- exhaustive agreement with the reference --------------------------------------------


def test_reference_agrees_with_rfc6962_vectors() -> None:
    # Guards the guard: the reference must itself reproduce the published vectors.
    reference = ReferenceTree(RFC6962_LEAVES)
    assert reference.mth(0, 0) == EMPTY_ROOT_HASH
    assert [reference.mth(0, n).hex() for n in range(1, 9)] == RFC6962_ROOTS
    for leaf_index, tree_size, expected_proof in RFC6962_INCLUSION_PROOFS:
        assert [h.hex() for h in reference.path(leaf_index, 0, tree_size)] == expected_proof
    for tree_size1, tree_size2, expected_proof in RFC6962_CONSISTENCY_PROOFS:
        assert [h.hex() for h in reference.proof(tree_size1, tree_size2)] == expected_proof


def test_compact_range_root_and_frontier_for_every_size() -> None:
    frontier_hashes: list[bytes] = []
    for tree_size in range(MAX_TREE_SIZE + 1):
        assert root_hash(frontier_hashes, tree_size) == REFERENCE.mth(0, tree_size)
        assert frontier_hashes == [NODE_STORE[node_id] for node_id in frontier_nodes(tree_size)]
        if tree_size < MAX_TREE_SIZE:
            frontier_hashes, _ = append(frontier_hashes, tree_size, LEAF_HASHES[tree_size])


def test_compact_range_creates_each_interior_node_once() -> None:
    frontier_hashes: list[bytes] = []
    created: list[tuple[NodeId, bytes]] = []
    for tree_size, leaf in enumerate(LEAF_HASHES):
        frontier_hashes, new_nodes = append(frontier_hashes, tree_size, leaf)
        # One new node per trailing 1-bit of the old size: amortised one per append.
        assert len(new_nodes) == (tree_size ^ (tree_size + 1)).bit_length() - 1
        assert all(node_id.leaf_end == tree_size + 1 for node_id, _ in new_nodes)
        created += new_nodes
    interior_nodes = {node_id: h for node_id, h in NODE_STORE.items() if node_id.level >= 1}
    assert dict(created) == interior_nodes
    assert len(created) == len(interior_nodes)


def test_append_many_equals_repeated_append() -> None:
    frontier_one_by_one: list[bytes] = []
    nodes_one_by_one: list[tuple[NodeId, bytes]] = []
    for tree_size, leaf in enumerate(LEAF_HASHES[:77]):
        frontier_one_by_one, new_nodes = append(frontier_one_by_one, tree_size, leaf)
        nodes_one_by_one += new_nodes
    frontier_batched, nodes_batched = append_many([], 0, LEAF_HASHES[:50])
    frontier_batched, more_nodes = append_many(frontier_batched, 50, LEAF_HASHES[50:77])
    assert frontier_batched == frontier_one_by_one
    assert nodes_batched + more_nodes == nodes_one_by_one


@pytest.mark.parametrize("tree_size", range(1, MAX_TREE_SIZE + 1))
def test_inclusion_proofs_for_every_leaf(tree_size: int) -> None:
    root = REFERENCE.mth(0, tree_size)
    for leaf_index in range(tree_size):
        proof_nodes = inclusion_nodes(leaf_index, tree_size)
        assert len(proof_nodes.node_ids) <= 2 * tree_size.bit_length()
        proof = proof_nodes.rehash(_fetch(proof_nodes.node_ids, tree_size))
        assert proof == REFERENCE.path(leaf_index, 0, tree_size)
        _assert_ephemeral_node_is_in_proof(proof_nodes, proof, tree_size)
        verify_inclusion(LEAF_HASHES[leaf_index], leaf_index, tree_size, proof, root)


@pytest.mark.parametrize("tree_size2", range(1, MAX_TREE_SIZE + 1))
def test_consistency_proofs_for_every_earlier_size(tree_size2: int) -> None:
    root2 = REFERENCE.mth(0, tree_size2)
    for tree_size1 in range(1, tree_size2 + 1):
        proof_nodes = consistency_nodes(tree_size1, tree_size2)
        assert len(proof_nodes.node_ids) <= 2 * tree_size2.bit_length()
        proof = proof_nodes.rehash(_fetch(proof_nodes.node_ids, tree_size2))
        assert proof == REFERENCE.proof(tree_size1, tree_size2)
        _assert_ephemeral_node_is_in_proof(proof_nodes, proof, tree_size2)
        verify_consistency(tree_size1, tree_size2, proof, REFERENCE.mth(0, tree_size1), root2)


def _assert_ephemeral_node_is_in_proof(
    proof_nodes: ProofNodes, proof: list[bytes], tree_size: int
) -> None:
    # The rehashed node stands where its parts stood, and is the hash of the part of the
    # ephemeral subtree that exists in this tree.
    ephemeral_node_id = proof_nodes.ephemeral_node_id
    if ephemeral_node_id is None:
        assert proof_nodes.ephemeral_begin == proof_nodes.ephemeral_end
        assert len(proof) == len(proof_nodes.node_ids)
        return
    assert ephemeral_node_id.leaf_begin < tree_size
    existing_end = min(ephemeral_node_id.leaf_end, tree_size)
    expected_hash = REFERENCE.mth(ephemeral_node_id.leaf_begin, existing_end)
    assert proof[proof_nodes.ephemeral_begin] == expected_hash

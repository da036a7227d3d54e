"""Verify RFC 9162 inclusion and consistency proofs (docs/FORMAT.md §10).

This file depends on nothing but the standard library's hashlib so that a counterparty or an
auditor can copy it alone and check our proofs without trusting any other code of ours.
The algorithms are the iterative ones of RFC 9162 sections 2.1.3.2 and 2.1.4.2, step for
step; transparency-dev/merkle's proof/verify.go computes the same thing another way.

A root hash does not commit to its tree's size (the path for leaf 0 of 7 leaves has the
same shape as for 8), so take tree_size and root_hash together from one signed checkpoint,
never from the party whose proof is being checked.

Every failure raises ProofError; `.code` is a short stable string meant for programs
(logs, API errors, tests), the message is meant for people. The codes: not_an_integer,
size_negative, size_zero, size_decreasing, index_out_of_range, wrong_hash_length,
proof_too_long, proof_too_short, root_mismatch.
"""

import hashlib

HASH_SIZE_BYTES = 32

# Spelled out rather than collections.abc.Sequence so that hashlib stays the only import.
ProofHashes = list[bytes] | tuple[bytes, ...]


class ProofError(ValueError):
    """A proof, or the claim it is checked against, is malformed or does not hold."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def verify_inclusion(
    leaf_hash: bytes,
    leaf_index: int,
    tree_size: int,
    proof: ProofHashes,
    root_hash: bytes,
) -> None:
    """Raise ProofError unless `proof` shows `leaf_hash` at 0-based `leaf_index` in the
    tree of `tree_size` leaves whose root is `root_hash`."""
    calculated_root_hash = root_from_inclusion_proof(leaf_hash, leaf_index, tree_size, proof)
    _check_hash("root_hash", root_hash)
    if calculated_root_hash != root_hash:
        raise ProofError(
            "root_mismatch",
            f"inclusion proof for leaf {leaf_index} of {tree_size} gives root "
            f"{calculated_root_hash.hex()}, expected {root_hash.hex()}",
        )


def root_from_inclusion_proof(
    leaf_hash: bytes, leaf_index: int, tree_size: int, proof: ProofHashes
) -> bytes:
    """The root hash that `proof` implies for `leaf_hash` at `leaf_index` in a tree of
    `tree_size` leaves; the caller must still compare it with a root it trusts."""
    _check_count("tree_size", tree_size)
    _check_count("leaf_index", leaf_index)
    if leaf_index >= tree_size:
        raise ProofError(
            "index_out_of_range", f"leaf_index {leaf_index} is not below tree_size {tree_size}"
        )
    _check_hash("leaf_hash", leaf_hash)
    _check_proof_hashes(proof)

    # RFC 9162 section 2.1.3.2. fn walks up from the leaf, sn from the last leaf; where they
    # meet, the remaining path runs along the right border and every sibling is on the left.
    fn, sn = leaf_index, tree_size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError(
                "proof_too_long",
                f"inclusion proof for leaf {leaf_index} of {tree_size} has "
                f"{len(proof)} hashes, more than the path to the root",
            )
        if fn & 1 or fn == sn:
            r = _node_hash(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(
            "proof_too_short",
            f"inclusion proof for leaf {leaf_index} of {tree_size} has only "
            f"{len(proof)} hashes, fewer than the path to the root",
        )
    return r


def verify_consistency(
    tree_size1: int,
    tree_size2: int,
    proof: ProofHashes,
    root_hash1: bytes,
    root_hash2: bytes,
) -> None:
    """Raise ProofError unless `proof` shows that the tree of `tree_size2` leaves with root
    `root_hash2` starts with the tree of `tree_size1` leaves with root `root_hash1`.

    As in RFC 9162, the first tree must not be empty: the empty tree is a prefix of every
    tree, so a proof from it shows nothing, and accepting one would only hide caller bugs.
    Equal sizes, which RFC 9162 leaves undefined, are accepted the way transparency-dev and
    C2SP witnesses accept them: the proof must be empty and the two roots equal.
    """
    calculated_root_hash2 = root_from_consistency_proof(tree_size1, tree_size2, proof, root_hash1)
    _check_hash("root_hash2", root_hash2)
    if calculated_root_hash2 != root_hash2:
        raise ProofError(
            "root_mismatch",
            f"consistency proof {tree_size1} -> {tree_size2} gives second root "
            f"{calculated_root_hash2.hex()}, expected {root_hash2.hex()}",
        )


def root_from_consistency_proof(
    tree_size1: int, tree_size2: int, proof: ProofHashes, root_hash1: bytes
) -> bytes:
    """The root hash of the tree of `tree_size2` leaves that `proof` implies, after checking
    the proof against the trusted `root_hash1` of the first `tree_size1` leaves."""
    _check_count("tree_size1", tree_size1)
    _check_count("tree_size2", tree_size2)
    if tree_size1 == 0:
        raise ProofError("size_zero", "consistency proofs from the empty tree are not defined")
    if tree_size1 > tree_size2:
        raise ProofError(
            "size_decreasing", f"tree_size1 {tree_size1} is larger than tree_size2 {tree_size2}"
        )
    _check_hash("root_hash1", root_hash1)
    _check_proof_hashes(proof)
    if tree_size1 == tree_size2:
        if proof:
            raise ProofError(
                "proof_too_long",
                f"consistency proof between equal sizes {tree_size1} must be empty, "
                f"got {len(proof)} hashes",
            )
        return root_hash1

    # RFC 9162 section 2.1.4.2, steps 1 to 7. fr rebuilds the first root, sr the second.
    if not proof:
        raise ProofError(
            "proof_too_short", f"consistency proof {tree_size1} -> {tree_size2} is empty"
        )
    path = list(proof)
    if tree_size1 & (tree_size1 - 1) == 0:
        # The first tree is then one complete subtree of the second, and its root is the
        # first node of the path; the proof leaves it out because the verifier has it.
        path.insert(0, root_hash1)
    fn, sn = tree_size1 - 1, tree_size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(
                "proof_too_long",
                f"consistency proof {tree_size1} -> {tree_size2} has {len(proof)} hashes, "
                "more than needed",
            )
        if fn & 1 or fn == sn:
            fr = _node_hash(c, fr)
            sr = _node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(
            "proof_too_short",
            f"consistency proof {tree_size1} -> {tree_size2} has only {len(proof)} hashes, "
            "fewer than needed",
        )
    if fr != root_hash1:
        raise ProofError(
            "root_mismatch",
            f"consistency proof {tree_size1} -> {tree_size2} gives first root {fr.hex()}, "
            f"expected {root_hash1.hex()}",
        )
    return sr


def _node_hash(left: bytes, right: bytes) -> bytes:
    # Duplicated from ledger.merkle_hash on purpose: this file must stand alone.
    return hashlib.sha256(b"\x01" + left + right).digest()


def _check_count(name: str, value: int) -> None:
    # Proofs arrive from JSON and other languages: a bool, a float or a negative number
    # must be refused here rather than wrap, truncate or shift in surprising ways.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProofError("not_an_integer", f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        code = "index_out_of_range" if name == "leaf_index" else "size_negative"
        raise ProofError(code, f"{name} must not be negative, got {value}")


def _check_hash(name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE_BYTES:
        raise ProofError(
            "wrong_hash_length",
            f"{name} must be {HASH_SIZE_BYTES} bytes, got {_describe(value)}",
        )


def _check_proof_hashes(proof: ProofHashes) -> None:
    for position, proof_hash in enumerate(proof):
        _check_hash(f"proof[{position}]", proof_hash)


def _describe(value: object) -> str:
    return f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__

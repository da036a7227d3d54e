"""RFC 6962 / RFC 9162 hashing for the journal's Merkle tree (docs/FORMAT.md §9–10).

The one-byte prefixes keep leaf hashes and node hashes in separate domains: without them an
interior node's 64 input bytes could be passed off as a leaf, and a proof for a leaf that
was never logged could be forged (the second-preimage attack RFC 6962 section 2.1 closes).
"""

import hashlib
from typing import Final

HASH_SIZE_BYTES: Final = 32

_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 ‖ data): the leaf hash, which is also the journal's chain link."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 ‖ left ‖ right) for two child hashes (leaf or node) of 32 bytes each."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


# The root of a tree with no leaves; RFC 6962 defines it as the hash of the empty string,
# with no prefix, so it can collide with neither a leaf hash nor a node hash.
EMPTY_ROOT_HASH: Final = hashlib.sha256(b"").digest()

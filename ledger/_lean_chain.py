"""Leaf hashes, chain links and the Merkle frontier, one line at a time and in place.

``ledger.compact_range.append`` copies the frontier and builds a ``NodeId`` per level for
every leaf, because the write path stores the nodes it completes; a verifier keeps only
the frontier, so it merges the carry in place (the same binary-counter walk).
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Iterable

from ledger import compact_range

_sha256 = hashlib.sha256
_hexlify = binascii.hexlify  # lowercase hex as bytes, as a line holds it


class Chain:
    """The chain position and tree of the lines fed so far."""

    __slots__ = ("frontier", "prev_hex", "roots_at", "sizes_wanted", "tree_size")

    def __init__(self, sizes_wanted: Iterable[int] = ()) -> None:
        self.tree_size = 0
        self.prev_hex = "0" * 64
        self.frontier: list[bytes] = []
        self.sizes_wanted = frozenset(sizes_wanted)
        self.roots_at: dict[int, bytes] = {}
        if 0 in self.sizes_wanted:
            self.roots_at[0] = self.root_hash()

    def feed(self, canonical: bytes) -> None:
        """Append the leaf of ``canonical`` (an entry's bytes, without the newline)."""
        self.feed_block([canonical])

    def feed_block(self, bodies: list[bytes], links: list[bytes] | None = None) -> None:
        """Append the leaves of ``bodies``, one after another: one call for a block;
        the leaf hashes' hex, the next lines' ``prev``, go to ``links`` if given."""
        size = self.tree_size
        frontier = self.frontier
        pop = frontier.pop
        append = frontier.append
        wanted = self.sizes_wanted
        leaf_hash = b""
        link = links.append if links is not None else None
        for body in bodies:
            leaf_hash = _sha256(b"\x00" + body).digest()
            if link is not None:
                link(_hexlify(leaf_hash))
            carry = leaf_hash
            bits = size
            while bits & 1:
                carry = _sha256(b"\x01" + pop() + carry).digest()
                bits >>= 1
            append(carry)
            size += 1
            if wanted and size in wanted:
                self.tree_size = size
                self.roots_at[size] = self.root_hash()
        if bodies:
            self.tree_size = size
            self.prev_hex = leaf_hash.hex()

    def root_hash(self) -> bytes:
        return compact_range.root_hash(self.frontier, self.tree_size)

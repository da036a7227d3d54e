"""Proof receipts in C2SP ``tlog-proof@v1`` form: an entry's index, its inclusion proof and
the signed checkpoint it is proved against, checkable offline by anyone holding the
log's verifier key. The format, exactly as the spec gives it::

    c2sp.org/tlog-proof@v1
    extra <base64 opaque data>         (optional; omitted when there is none)
    index <zero-based leaf index, decimal, no leading zeros>
    <base64 SHA-256 hash>              (zero or more: leaf's sibling first, up to the root's child)

    <signed checkpoint note, verbatim>

This module only reads and writes that text. Nothing in a parsed receipt is trusted: the
caller opens the checkpoint with the log's key (``ledger.checkpoint.open_checkpoint``)
and checks the path against its root (``ledger.merkle_verify.verify_inclusion``). The
extra data is never authenticated by either.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.checkpoint import (
    HASH_SIZE,
    MAX_TREE_SIZE,
    Checkpoint,
    decode_hash,
    parse_checkpoint,
    parse_decimal,
)
from ledger.signed_note import NoteError, parse_note

HEADER = "c2sp.org/tlog-proof@v1"
# A tree of at most 2^63-1 leaves is at most 63 levels deep.
MAX_PATH_LENGTH = 63


class ReceiptError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True, slots=True)
class Receipt:
    leaf_index: int
    audit_path: tuple[bytes, ...]
    checkpoint: bytes  # the signed note, verbatim and not yet verified
    extra_data: bytes | None = None


def _unsigned_checkpoint(note: bytes) -> Checkpoint:
    """The checkpoint's body, checked for syntax only (its signature is the caller's job)."""
    try:
        text, _ = parse_note(note)
        return parse_checkpoint(text)
    except NoteError as exc:
        raise ReceiptError("malformed", f"embedded checkpoint: {exc}") from None


def _check_index(leaf_index: int, cp: Checkpoint) -> None:
    # Not the inclusion check, only what the format alone can tell: the index is in the tree.
    if leaf_index >= cp.tree_size:
        raise ReceiptError("malformed", "leaf index is not below the checkpoint's tree size")


def format_receipt(
    leaf_index: int,
    audit_path: Sequence[bytes],
    signed_checkpoint: bytes,
    extra_data: bytes | None = None,
) -> bytes:
    if isinstance(leaf_index, bool) or not 0 <= leaf_index <= MAX_TREE_SIZE:
        raise ReceiptError("malformed", "leaf index out of range")
    if len(audit_path) > MAX_PATH_LENGTH or any(len(h) != HASH_SIZE for h in audit_path):
        raise ReceiptError("malformed", "audit path must be at most 63 hashes of 32 bytes")
    _check_index(leaf_index, _unsigned_checkpoint(signed_checkpoint))
    lines = [HEADER]
    if extra_data is not None:
        # An empty 'extra ' line would be ambiguous with no extra data; the spec has no say.
        if not extra_data:
            raise ReceiptError("malformed", "extra data, when given, must be non-empty")
        lines.append("extra " + base64.b64encode(extra_data).decode("ascii"))
    lines.append(f"index {leaf_index}")
    lines.extend(base64.b64encode(h).decode("ascii") for h in audit_path)
    return "".join(f"{line}\n" for line in lines).encode("ascii") + b"\n" + signed_checkpoint


def parse_receipt(data: bytes) -> Receipt:
    # Proof lines are never empty, so the first blank line ends them; the checkpoint's own
    # blank line (before its signatures) comes later.
    head, sep, checkpoint = data.partition(b"\n\n")
    if not sep:
        raise ReceiptError("malformed", "no blank line before the checkpoint")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise ReceiptError("malformed", "proof lines must be ASCII") from None
    if lines[0] != HEADER:
        raise ReceiptError("malformed", f"first line must be {HEADER}")
    rest = lines[1:]
    extra_data = None
    if rest and rest[0].startswith("extra "):
        extra_data = _decode_extra(rest.pop(0)[len("extra ") :])
    if not rest or not rest[0].startswith("index "):
        raise ReceiptError("malformed", "missing index line")
    try:
        leaf_index = parse_decimal(rest.pop(0)[len("index ") :], MAX_TREE_SIZE)
    except ValueError as exc:
        raise ReceiptError("malformed", f"index: {exc}") from None
    if len(rest) > MAX_PATH_LENGTH:
        raise ReceiptError("malformed", f"audit path longer than {MAX_PATH_LENGTH} hashes")
    try:
        audit_path = tuple(decode_hash(line) for line in rest)
    except ValueError as exc:
        raise ReceiptError("malformed", f"audit path: {exc}") from None
    _check_index(leaf_index, _unsigned_checkpoint(checkpoint))
    return Receipt(leaf_index, audit_path, checkpoint, extra_data)


def _decode_extra(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except binascii.Error:
        raise ReceiptError("malformed", "extra data is not base64") from None
    if not raw or base64.b64encode(raw).decode("ascii") != text:
        raise ReceiptError("malformed", "extra data must be non-empty canonical base64")
    return raw

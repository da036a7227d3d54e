"""C2SP tlog-checkpoint: the signed tree head outsiders check the journal against.

Parsing is strict so that one checkpoint has exactly one text: a lenient parser would let
two different note texts (say ``007`` and ``7``) claim the same tree head, and auditors
compare checkpoints by their bytes. The log's key name must equal the origin (docs/AUDITING.md
§4), so a valid signature by some other log's key never passes for this log's checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from ledger.signed_note import NoteError, Signer, Verifier, open_note, sign_note

HASH_SIZE = 32
# Go's tlog and transparency-dev parse tree sizes as 64-bit integers; stay within int64.
MAX_TREE_SIZE = 2**63 - 1

_DECIMAL = re.compile(r"0|[1-9][0-9]*")


class CheckpointError(NoteError):
    """The checkpoint body is malformed, or signed under a name other than its origin."""


def _check_line(value: str, what: str) -> None:
    if not value or any(ch < " " for ch in value):
        raise CheckpointError("malformed_checkpoint", f"{what} must be a non-empty line")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise CheckpointError("malformed_checkpoint", f"{what} is not valid UTF-8") from None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "origin")
        if isinstance(self.tree_size, bool) or not 0 <= self.tree_size <= MAX_TREE_SIZE:
            raise CheckpointError("malformed_checkpoint", "tree size out of range")
        if len(self.root_hash) != HASH_SIZE:
            raise CheckpointError("malformed_checkpoint", "root hash must be 32 bytes")
        # A list would make the frozen value unhashable and mutable from outside.
        object.__setattr__(self, "extensions", tuple(self.extensions))
        for line in self.extensions:
            _check_line(line, "extension line")


def format_checkpoint(cp: Checkpoint) -> str:
    """``<origin>\\n<tree size>\\n<base64 root>\\n`` then one line per extension."""
    lines = [cp.origin, str(cp.tree_size), base64.b64encode(cp.root_hash).decode("ascii")]
    return "".join(f"{line}\n" for line in (*lines, *cp.extensions))


def decode_hash(text: str) -> bytes:
    """A 32-byte hash in canonical standard base64, or ValueError."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise ValueError("hash is not base64") from None
    # Canonical only: otherwise stray low bits in the last character give one hash many texts.
    if len(raw) != HASH_SIZE or base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("hash is not 32 bytes of canonical base64")
    return raw


def parse_decimal(text: str, maximum: int) -> int:
    """ASCII decimal without leading zeros (``0`` itself allowed), up to ``maximum``."""
    # int() alone would accept '+7', ' 7', '0_7' and non-ASCII digits.
    if not _DECIMAL.fullmatch(text) or len(text) > len(str(maximum)):
        raise ValueError("not a canonical decimal")
    value = int(text)
    if value > maximum:
        raise ValueError("decimal out of range")
    return value


def parse_checkpoint(text: str) -> Checkpoint:
    """The checkpoint in a note text (signature lines already removed)."""
    if not text.endswith("\n"):
        raise CheckpointError("malformed_checkpoint", "checkpoint must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("malformed_checkpoint", "checkpoint needs origin, size and root")
    origin, size_text, root_text, *extensions = lines
    try:
        tree_size = parse_decimal(size_text, MAX_TREE_SIZE)
    except ValueError as exc:
        raise CheckpointError("malformed_checkpoint", f"tree size: {exc}") from None
    try:
        root_hash = decode_hash(root_text)
    except ValueError as exc:
        raise CheckpointError("malformed_checkpoint", f"root hash: {exc}") from None
    return Checkpoint(origin, tree_size, root_hash, tuple(extensions))


def sign_checkpoint(cp: Checkpoint, signer: Signer) -> bytes:
    """The checkpoint as a signed note; the signer's name must be the origin."""
    if signer.name != cp.origin:
        raise CheckpointError("origin_mismatch", "signer key name must equal the origin")
    return sign_note(format_checkpoint(cp), signer)


def open_checkpoint(note: bytes, verifier: Verifier) -> Checkpoint:
    """Verify ``note`` with the log's key, then parse it; cosignatures are ignored."""
    # Verify before reading: the text means nothing until the log's key has vouched for it.
    opened = open_note(note, [verifier])
    cp = parse_checkpoint(opened.text)
    if cp.origin != verifier.name:
        raise CheckpointError("origin_mismatch", "checkpoint origin is not the key name")
    return cp

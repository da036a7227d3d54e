"""C2SP signed-note with Ed25519 (signature type 0x01), byte-compatible with Go's
golang.org/x/mod/sumdb/note.

A note's text means nothing until a trusted key has verified it, so ``open_note`` hands
back text only when at least one known key verified it and no known key failed: a known
key whose signature fails rejects the whole note, signatures from keys we do not know are
kept aside (they may be witnesses, or a rotated log key) and never count as verification.

Where the spec leaves room we follow Go, except that every signature from a known key is
verified (Go checks only the first one per key; the spec says MUST verify).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

ALG_ED25519 = 0x01
# The spec asks verifiers to cap signatures (at no fewer than 16); Go caps at 100.
MAX_SIGNATURES = 100

_SIG_PREFIX = "— "
_SKEY_PREFIX = "PRIVATE+KEY+"
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # all ASCII controls but newline
# Go's unicode.IsSpace set exactly, so every name accepted here is accepted by Go.
_UNICODE_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
)


class NoteError(ValueError):
    """A note, key or key name was refused; ``code`` says why, stably, for callers."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def is_valid_key_name(name: str) -> bool:
    """Non-empty, valid UTF-8, no Unicode space, no '+' (signed-note rules).

    Control characters are refused too: a name holding one could never appear in a note.
    """
    if not name or "+" in name:
        return False
    # Lone surrogates are the one thing a Python str holds that UTF-8 cannot encode.
    return not any(ch in _UNICODE_SPACES or ch < " " or "\ud800" <= ch <= "\udfff" for ch in name)


def _check_name(name: str) -> None:
    if not is_valid_key_name(name):
        raise NoteError("invalid_name", "key name must be non-empty UTF-8 without spaces or '+'")


def compute_key_id(name: str, public_key: bytes) -> int:
    """SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4] as a big-endian uint32."""
    _check_name(name)
    return _key_id(name, bytes([ALG_ED25519]) + public_key)


def _key_id(name: str, key_material: bytes) -> int:
    """Key ID over key material that already starts with its signature type byte."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + key_material).digest()
    return int.from_bytes(digest[:4], "big")


def _b64decode(text: str) -> bytes:
    """Standard base64 with padding; anything outside the alphabet is refused."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise ValueError("not base64") from None


@dataclass(frozen=True, slots=True)
class Verifier:
    """A known Ed25519 key: the key ID is derived, so a mismatched one is refused."""

    name: str
    key_id: int
    public_key: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if len(self.public_key) != 32:
            raise NoteError("malformed_key", "an Ed25519 public key is 32 bytes")
        if self.key_id != compute_key_id(self.name, self.public_key):
            raise NoteError("key_id_mismatch", f"key ID does not match key {self.name}")

    @classmethod
    def from_public_key(cls, name: str, public_key: bytes) -> Verifier:
        return cls(name, compute_key_id(name, public_key), bytes(public_key))

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    @property
    def vkey(self) -> str:
        return format_vkey(self)


def format_vkey(verifier: Verifier) -> str:
    """``<name>+<8 hex key id>+<base64(0x01 ‖ public key)>``."""
    key = base64.b64encode(bytes([ALG_ED25519]) + verifier.public_key).decode("ascii")
    return f"{verifier.name}+{verifier.key_id:08x}+{key}"


def parse_vkey(text: str) -> Verifier:
    """Parse a verifier key as Go's ``note.NewVerifier`` does (base64 must be canonical)."""
    name, _, rest = text.partition("+")
    id_hex, _, key_b64 = rest.partition("+")
    _check_name(name)
    key = _decode_key_material(id_hex, key_b64)
    # Go checks the ID over the whole key material before looking at the algorithm byte.
    if int(id_hex, 16) != _key_id(name, key):
        raise NoteError("key_id_mismatch", f"key ID does not match key {name}")
    if key[0] != ALG_ED25519:
        raise NoteError("unknown_algorithm", f"unsupported signature type {key[0]:#04x}")
    return Verifier(name, int(id_hex, 16), key[1:])


def _decode_key_material(id_hex: str, key_b64: str) -> bytes:
    # Deliberately says nothing of the input: for a signer key it is the secret.
    if not _HEX8.fullmatch(id_hex):
        raise NoteError("malformed_key", "key ID must be 8 hex digits")
    try:
        key = _b64decode(key_b64)
    except ValueError:
        raise NoteError("malformed_key", "key material is not base64") from None
    if not key or base64.b64encode(key).decode("ascii") != key_b64:
        raise NoteError("malformed_key", "key material is not canonical base64")
    if key[0] == ALG_ED25519 and len(key) != 33:
        raise NoteError("malformed_key", "an Ed25519 key is 32 bytes")
    return key


class Signer:
    """An Ed25519 signing key under a name. Its repr never shows the secret."""

    __slots__ = ("_private_key", "key_id", "name", "public_key")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_name(name)
        self.name = name
        self._private_key = private_key
        self.public_key = private_key.public_key().public_bytes_raw()
        self.key_id = compute_key_id(name, self.public_key)

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Signer:
        if len(seed) != 32:
            raise NoteError("malformed_key", "an Ed25519 seed is 32 bytes")
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, message: bytes) -> bytes:
        return self._private_key.sign(message)

    def verifier(self) -> Verifier:
        return Verifier(self.name, self.key_id, self.public_key)

    def seed(self) -> bytes:
        return self._private_key.private_bytes_raw()

    def __repr__(self) -> str:
        return f"Signer(name={self.name!r}, key_id={self.key_id:08x})"


def format_signer_key(signer: Signer) -> str:
    """``PRIVATE+KEY+<name>+<hex id>+<base64(0x01 ‖ seed)>`` — Go's signer key text."""
    key = base64.b64encode(bytes([ALG_ED25519]) + signer.seed()).decode("ascii")
    return f"{_SKEY_PREFIX}{signer.name}+{signer.key_id:08x}+{key}"


def parse_signer_key(text: str) -> Signer:
    """Parse a signer key as Go's ``note.NewSigner``; errors never echo the text."""
    if not text.startswith(_SKEY_PREFIX):
        raise NoteError("malformed_key", "signer key must start with PRIVATE+KEY+")
    name, _, rest = text[len(_SKEY_PREFIX) :].partition("+")
    id_hex, _, key_b64 = rest.partition("+")
    _check_name(name)
    key = _decode_key_material(id_hex, key_b64)
    if key[0] != ALG_ED25519:
        raise NoteError("unknown_algorithm", f"unsupported signature type {key[0]:#04x}")
    signer = Signer.from_seed(name, key[1:])
    # The ID names the public key, so it can only be checked once that is derived.
    if signer.key_id != int(id_hex, 16):
        raise NoteError("key_id_mismatch", f"key ID does not match key {name}")
    return signer


def generate_signer(name: str) -> tuple[str, str]:
    """A fresh key pair as (signer key text, verifier key text)."""
    signer = Signer(name, Ed25519PrivateKey.generate())
    return format_signer_key(signer), format_vkey(signer.verifier())


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature line: ``base64`` holds key ID ‖ signature exactly as written."""

    name: str
    key_id: int
    base64: str

    @property
    def signature(self) -> bytes:
        return _b64decode(self.base64)[4:]

    @property
    def line(self) -> str:
        return f"{_SIG_PREFIX}{self.name} {self.base64}\n"


@dataclass(frozen=True, slots=True)
class VerifiedNote:
    text: str
    signatures: tuple[Signature, ...]  # verified by known keys, at least one
    unverified: tuple[Signature, ...]  # from keys we do not know; prove nothing


def _check_text(text: str) -> None:
    if _CONTROL.search(text):
        raise NoteError("malformed", "note holds a control character")


def sign_note(text: str, signers: Signer | Iterable[Signer]) -> bytes:
    """Sign ``text`` (which must end in a newline) with every signer, in order."""
    signer_list = [signers] if isinstance(signers, Signer) else list(signers)
    if not text.endswith("\n"):
        raise NoteError("malformed", "note text must end with a newline")
    _check_text(text)
    if not signer_list or len(signer_list) > MAX_SIGNATURES:
        raise NoteError("malformed", f"a note needs 1 to {MAX_SIGNATURES} signatures")
    try:
        message = text.encode("utf-8")
    except UnicodeEncodeError:
        raise NoteError("malformed", "note text is not valid UTF-8") from None
    lines = []
    for signer in signer_list:
        raw = signer.key_id.to_bytes(4, "big") + signer.sign(message)
        lines.append(Signature(signer.name, signer.key_id, base64.b64encode(raw).decode()).line)
    return message + b"\n" + "".join(lines).encode("utf-8")


def parse_note(note: bytes) -> tuple[str, tuple[Signature, ...]]:
    """Split a note into text and signatures, checking syntax only: verifies nothing."""
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("malformed", "note is not valid UTF-8") from None
    _check_text(decoded)
    # The text may hold blank lines of its own; the signatures follow the last one.
    split = decoded.rfind("\n\n")
    if split < 0:
        raise NoteError("malformed", "no blank line before the signatures")
    text, block = decoded[: split + 1], decoded[split + 2 :]
    if not block.endswith("\n"):
        raise NoteError("malformed", "signature block must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError("malformed", f"more than {MAX_SIGNATURES} signatures")
    return text, tuple(_parse_signature_line(line) for line in lines)


def _parse_signature_line(line: str) -> Signature:
    if not line.startswith(_SIG_PREFIX):
        raise NoteError("malformed", "signature line must start with an em dash and a space")
    name, _, b64 = line[len(_SIG_PREFIX) :].partition(" ")
    try:
        raw = _b64decode(b64)
    except ValueError:
        raise NoteError("malformed", "signature is not base64") from None
    if not is_valid_key_name(name) or len(raw) < 5:
        raise NoteError("malformed", "bad signature line")
    return Signature(name, int.from_bytes(raw[:4], "big"), b64)


def open_note(note: bytes, verifiers: Iterable[Verifier]) -> VerifiedNote:
    """Parse ``note`` and verify it against the known keys (see the module docstring)."""
    known: dict[tuple[str, int], set[Verifier]] = {}
    for v in verifiers:
        known.setdefault((v.name, v.key_id), set()).add(v)
    text, signatures = parse_note(note)
    message = text.encode("utf-8")
    verified: dict[tuple[str, int], Signature] = {}
    unverified: list[Signature] = []
    for sig in dict.fromkeys(signatures):  # identical lines count once, in order
        candidates = known.get((sig.name, sig.key_id))
        if candidates is None:
            unverified.append(sig)
            continue
        if len(candidates) > 1:
            raise NoteError("ambiguous_key", f"several known keys are {sig.name}+{sig.key_id:08x}")
        (verifier,) = candidates
        if not verifier.verify(message, sig.signature):
            raise NoteError("bad_signature", f"invalid signature for {sig.name}+{sig.key_id:08x}")
        verified.setdefault((sig.name, sig.key_id), sig)
    if not verified:
        raise NoteError("no_verified_signature", "note has no signature from a known key")
    return VerifiedNote(text, tuple(verified.values()), tuple(unverified))

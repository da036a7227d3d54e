"""Checkpoints: the C2SP tlog-checkpoint body, strictly parsed, signed under the origin."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.checkpoint import (
    MAX_TREE_SIZE,
    Checkpoint,
    CheckpointError,
    format_checkpoint,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
)
from ledger.signed_note import NoteError, Signer, generate_signer, parse_signer_key, sign_note

ORIGIN = "ledger.example/coalition"
ROOT = hashlib.sha256(b"root").digest()
ROOT_B64 = base64.b64encode(ROOT).decode()
URLSAFE_ROOT = base64.urlsafe_b64encode(bytes([0xFF]) * 32).decode()
SIGNER = Signer.from_seed(ORIGIN, bytes(range(32)))
VERIFIER = SIGNER.verifier()


def _code(excinfo: pytest.ExceptionInfo[NoteError]) -> str:
    return excinfo.value.code


def test_format_is_the_spec_text() -> None:
    cp = Checkpoint(ORIGIN, 20852163, ROOT)
    assert format_checkpoint(cp) == f"{ORIGIN}\n20852163\n{ROOT_B64}\n"
    with_ext = Checkpoint(ORIGIN, 0, ROOT, ("ext one", "ext two"))
    assert format_checkpoint(with_ext) == f"{ORIGIN}\n0\n{ROOT_B64}\next one\next two\n"


def test_spec_example_parses() -> None:
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    cp = parse_checkpoint(text)
    assert (cp.origin, cp.tree_size, cp.extensions) == ("example.com/behind-the-sofa", 20852163, ())
    assert format_checkpoint(cp) == text


def test_empty_tree() -> None:
    empty = hashlib.sha256(b"").digest()
    cp = Checkpoint(ORIGIN, 0, empty)
    assert parse_checkpoint(format_checkpoint(cp)) == cp


@pytest.mark.parametrize(
    "text",
    [
        "",
        f"{ORIGIN}\n1\n{ROOT_B64}",  # no final newline
        f"{ORIGIN}\n1\n",
        f"\n1\n{ROOT_B64}\n",  # empty origin
        f"{ORIGIN}\n01\n{ROOT_B64}\n",  # leading zero
        f"{ORIGIN}\n00\n{ROOT_B64}\n",
        f"{ORIGIN}\n+1\n{ROOT_B64}\n",
        f"{ORIGIN}\n-1\n{ROOT_B64}\n",
        f"{ORIGIN}\n 1\n{ROOT_B64}\n",
        f"{ORIGIN}\n1_0\n{ROOT_B64}\n",
        f"{ORIGIN}\n١\n{ROOT_B64}\n",  # a non-ASCII digit int() would take
        f"{ORIGIN}\n{2**63}\n{ROOT_B64}\n",
        f"{ORIGIN}\n{'9' * 40}\n{ROOT_B64}\n",
        f"{ORIGIN}\n1\n{base64.b64encode(ROOT[:31]).decode()}\n",  # 31-byte root
        f"{ORIGIN}\n1\n{base64.b64encode(ROOT + b'x').decode()}\n",  # 33-byte root
        f"{ORIGIN}\n1\n{ROOT_B64[:-1]}\n",  # missing padding
        f"{ORIGIN}\n1\n{ROOT_B64[:-2]}B=\n",  # non-canonical trailing bits
        f"{ORIGIN}\n1\n{ROOT_B64} \n",
        f"{ORIGIN}\n1\n{ROOT_B64}\n\n",  # trailing empty line
        f"{ORIGIN}\n1\n{ROOT_B64}\n\next\n",  # empty extension line
        f"{ORIGIN}\n1\n{URLSAFE_ROOT}\n",  # base64url alphabet
        f"{ORIGIN}\t\n1\n{ROOT_B64}\n",  # control character
    ],
)
def test_malformed_checkpoints(text: str) -> None:
    with pytest.raises(CheckpointError) as excinfo:
        parse_checkpoint(text)
    assert _code(excinfo) == "malformed_checkpoint"


def test_max_tree_size_is_accepted() -> None:
    cp = parse_checkpoint(f"{ORIGIN}\n{MAX_TREE_SIZE}\n{ROOT_B64}\n")
    assert cp.tree_size == MAX_TREE_SIZE


@pytest.mark.parametrize(
    ("origin", "size", "root", "extensions"),
    [
        ("", 1, ROOT, ()),
        ("a\nb", 1, ROOT, ()),
        (ORIGIN, -1, ROOT, ()),
        (ORIGIN, MAX_TREE_SIZE + 1, ROOT, ()),
        (ORIGIN, True, ROOT, ()),
        (ORIGIN, 1, ROOT[:16], ()),
        (ORIGIN, 1, ROOT, ("",)),
        (ORIGIN, 1, ROOT, ("two\nlines",)),
    ],
)
def test_constructor_validates(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...]
) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint(origin, size, root, extensions)


def test_sign_and_open() -> None:
    cp = Checkpoint(ORIGIN, 42, ROOT)
    note = sign_checkpoint(cp, SIGNER)
    assert note.startswith(format_checkpoint(cp).encode() + b"\n\xe2\x80\x94 " + ORIGIN.encode())
    assert open_checkpoint(note, VERIFIER) == cp
    # Deterministic: Ed25519 gives the same bytes every time.
    assert sign_checkpoint(cp, SIGNER) == note


def test_cosignatures_from_unknown_keys_are_ignored() -> None:
    cp = Checkpoint(ORIGIN, 7, ROOT)
    witness = parse_signer_key(generate_signer("witness.example/w1")[0])
    note = sign_note(format_checkpoint(cp), [SIGNER, witness])
    assert open_checkpoint(note, VERIFIER) == cp


def _tampered(old: bytes, new: bytes) -> bytes:
    note = sign_checkpoint(Checkpoint(ORIGIN, 42, ROOT), SIGNER)
    assert old in note
    return note.replace(old, new, 1)


def test_changed_size_is_rejected() -> None:
    with pytest.raises(NoteError) as excinfo:
        open_checkpoint(_tampered(b"\n42\n", b"\n43\n"), VERIFIER)
    assert _code(excinfo) == "bad_signature"


def test_changed_root_is_rejected() -> None:
    other = base64.b64encode(hashlib.sha256(b"other").digest())
    with pytest.raises(NoteError) as excinfo:
        open_checkpoint(_tampered(ROOT_B64.encode(), other), VERIFIER)
    assert _code(excinfo) == "bad_signature"


def test_wrong_key_is_rejected() -> None:
    note = sign_checkpoint(Checkpoint(ORIGIN, 42, ROOT), SIGNER)
    other = Signer.from_seed(ORIGIN, bytes(32)).verifier()  # same name, other key
    with pytest.raises(NoteError) as excinfo:
        open_checkpoint(note, other)
    assert _code(excinfo) == "no_verified_signature"


def test_signer_name_must_be_origin() -> None:
    cp = Checkpoint("other.example/log", 42, ROOT)
    with pytest.raises(CheckpointError) as excinfo:
        sign_checkpoint(cp, SIGNER)
    assert _code(excinfo) == "origin_mismatch"
    # Signed anyway as a plain note: the signature verifies, the origin does not match.
    note = sign_note(format_checkpoint(cp), SIGNER)
    with pytest.raises(CheckpointError) as excinfo:
        open_checkpoint(note, VERIFIER)
    assert _code(excinfo) == "origin_mismatch"


def test_signed_note_that_is_not_a_checkpoint() -> None:
    note = sign_note("hello\n", SIGNER)
    with pytest.raises(CheckpointError) as excinfo:
        open_checkpoint(note, VERIFIER)
    assert _code(excinfo) == "malformed_checkpoint"


# Any non-empty line: no control characters, no lone surrogates.
_line_chars = st.characters(min_codepoint=0x20, max_codepoint=0xD7FF) | st.characters(
    min_codepoint=0xE000
)
_line = st.text(_line_chars, min_size=1, max_size=40)


@given(
    origin=_line,
    size=st.integers(0, MAX_TREE_SIZE),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(_line, max_size=3).map(tuple),
)
def test_round_trip_property(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...]
) -> None:
    cp = Checkpoint(origin, size, root, extensions)
    assert parse_checkpoint(format_checkpoint(cp)) == cp

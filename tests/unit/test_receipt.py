"""Proof receipts: the C2SP tlog-proof@v1 text, written and read strictly."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from ledger.receipt import MAX_PATH_LENGTH, Receipt, ReceiptError, format_receipt, parse_receipt
from ledger.signed_note import Signer

ORIGIN = "ledger.example/coalition"
SIGNER = Signer.from_seed(ORIGIN, bytes(range(32)))
ROOT = hashlib.sha256(b"root").digest()
CHECKPOINT = sign_checkpoint(Checkpoint(ORIGIN, 109482, ROOT), SIGNER)
PATH = tuple(hashlib.sha256(bytes([i])).digest() for i in range(5))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_exact_format() -> None:
    data = format_receipt(73894, PATH, CHECKPOINT, b"age-v1.2.1")
    expected = (
        "c2sp.org/tlog-proof@v1\n"
        f"extra {_b64(b'age-v1.2.1')}\n"
        "index 73894\n" + "".join(f"{_b64(h)}\n" for h in PATH) + "\n"
    ).encode() + CHECKPOINT
    assert data == expected
    assert parse_receipt(data) == Receipt(73894, PATH, CHECKPOINT, b"age-v1.2.1")


def test_without_extra_and_with_empty_path() -> None:
    small = sign_checkpoint(Checkpoint(ORIGIN, 1, ROOT), SIGNER)
    data = format_receipt(0, (), small)
    assert data == b"c2sp.org/tlog-proof@v1\nindex 0\n\n" + small
    assert parse_receipt(data) == Receipt(0, (), small, None)


def test_checkpoint_is_kept_verbatim_and_opens() -> None:
    receipt = parse_receipt(format_receipt(5, PATH, CHECKPOINT))
    assert receipt.checkpoint == CHECKPOINT
    assert open_checkpoint(receipt.checkpoint, SIGNER.verifier()).tree_size == 109482


HEAD = "c2sp.org/tlog-proof@v1\n"


@pytest.mark.parametrize(
    "head",
    [
        "",  # no header
        "c2sp.org/tlog-proof@v2\nindex 0\n",
        "C2SP.org/tlog-proof@v1\nindex 0\n",
        HEAD,  # no index
        HEAD + "index \n",
        HEAD + "index 01\n",
        HEAD + "index -1\n",
        HEAD + "index 1 \n",
        HEAD + "index  1\n",
        HEAD + f"index {2**63}\n",
        HEAD + "index 0\nextra AAAA\n",  # extra after index
        HEAD + "extra \nindex 0\n",  # empty extra
        HEAD + "extra AAA\nindex 0\n",  # bad base64
        HEAD + "extra AAB=\nindex 0\n",  # non-canonical base64
        HEAD + "extra AAAA\nextra AAAA\nindex 0\n",
        HEAD + f"index 0\n{_b64(PATH[0][:31])}\n",
        HEAD + f"index 0\n{_b64(PATH[0])} \n",
        HEAD + f"index 0\n{_b64(PATH[0])[:-1]}\n",
        HEAD + "index 0\n" + f"{_b64(PATH[0])}\n" * (MAX_PATH_LENGTH + 1),
        HEAD + "index 109482\n",  # index not below the tree size
        HEAD + "índex 0\n",
    ],
)
def test_malformed_heads(head: str) -> None:
    with pytest.raises(ReceiptError) as excinfo:
        parse_receipt(head.encode() + b"\n" + CHECKPOINT)
    assert excinfo.value.code == "malformed"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        HEAD.encode() + b"index 0\n",  # no blank line, no checkpoint
        HEAD.encode() + b"index 0\n\n",  # empty checkpoint
        HEAD.encode() + b"index 0\n\n" + CHECKPOINT[:-1],  # truncated note
        HEAD.encode() + b"index 0\n\n" + CHECKPOINT + b"trailing\n",
        HEAD.encode() + b"index 0\n\nnot a note\n",
        HEAD.encode() + b"index 0\n\n" + b"hello\n\n" + CHECKPOINT.split(b"\n\n")[1],
    ],
)
def test_malformed_checkpoints(data: bytes) -> None:
    with pytest.raises(ReceiptError) as excinfo:
        parse_receipt(data)
    assert excinfo.value.code == "malformed"


def test_max_path_length_is_accepted() -> None:
    path = (PATH[0],) * MAX_PATH_LENGTH
    big = sign_checkpoint(Checkpoint(ORIGIN, 2**63 - 1, ROOT), SIGNER)
    assert parse_receipt(format_receipt(0, path, big)).audit_path == path


@pytest.mark.parametrize(
    ("index", "path", "checkpoint", "extra"),
    [
        (-1, PATH, CHECKPOINT, None),
        (109482, PATH, CHECKPOINT, None),
        (0, (b"short",), CHECKPOINT, None),
        (0, (PATH[0],) * (MAX_PATH_LENGTH + 1), CHECKPOINT, None),
        (0, PATH, CHECKPOINT, b""),
        (0, PATH, b"not a note\n", None),
    ],
)
def test_format_refuses(
    index: int, path: tuple[bytes, ...], checkpoint: bytes, extra: bytes | None
) -> None:
    with pytest.raises(ReceiptError):
        format_receipt(index, path, checkpoint, extra)


@given(
    index=st.integers(0, 109481),
    path=st.lists(st.binary(min_size=32, max_size=32), max_size=20).map(tuple),
    extra=st.none() | st.binary(min_size=1, max_size=64),
)
def test_round_trip_property(index: int, path: tuple[bytes, ...], extra: bytes | None) -> None:
    assert parse_receipt(format_receipt(index, path, CHECKPOINT, extra)) == Receipt(
        index, path, CHECKPOINT, extra
    )

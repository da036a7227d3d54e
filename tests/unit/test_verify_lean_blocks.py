"""The export read in blocks (``ledger._lean_read``) and the block-wise scan over it:
the same lines as ``for line in file``, and the same verdict as the reference whatever
the block size, so failures at a block's edges (a link checked a block at a time, a
line cut across two reads, a last line without its newline) are named alike."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from _lean_journal import outcome_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_verify_lean import EXPORT_TAMPERS, LINES, Edit
from test_verify_lean_properties import TAMPERS, journals

from ledger import _lean_read
from ledger._lean_parallel import verify_alone
from ledger._lean_read import Blocks, body_at
from ledger.verify import verify_export
from ledger.verify_lean import verify_export_lean

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\r", b"{}", b"\n\n"]), max_size=40),
    st.integers(1, 12),
)
def test_blocks_are_the_files_lines(pieces: list[bytes], block_bytes: int) -> None:
    data = b"".join(pieces)
    blocks = Blocks(io.BytesIO(data), block_bytes)
    bodies = [body for block in blocks for body in block]
    lines = list(io.BytesIO(data))
    terminated = [line[:-1] for line in lines if line.endswith(b"\n")]
    assert bodies == terminated
    assert blocks.tail == (b"" if not lines or lines[-1].endswith(b"\n") else lines[-1])
    assert len(blocks.offsets) == len(bodies) + 1
    again = io.BytesIO(data)
    assert [body_at(again, blocks.offsets, seq) for seq in range(len(bodies))] == bodies


def _both(path: Path, workers: int) -> tuple[Any, Any]:
    reference = outcome_of(lambda: verify_export(str(path)))
    lean = outcome_of(lambda: verify_export_lean(str(path), workers=workers))
    return reference, lean


@pytest.mark.parametrize("block_bytes", [1, 300, 2_000])
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(("edit", "check", "seq"), EXPORT_TAMPERS)
def test_small_blocks_name_the_reference_failure(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    block_bytes: int,
    workers: int,
    edit: Edit,
    check: str | None,
    seq: int | None,
) -> None:
    monkeypatch.setattr(_lean_read, "BLOCK_BYTES", block_bytes)
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b"".join(edit(list(LINES))))
    reference, lean = _both(path, workers)
    assert lean == reference


@SETTINGS
@given(journals, st.sampled_from([1, 500, 4_000]))
def test_the_scan_itself_accepts_untampered_journals(
    tmp_path_factory: pytest.TempPathFactory, lines: tuple[bytes, ...], block_bytes: int
) -> None:
    path = tmp_path_factory.mktemp("blocks") / "journal.jsonl"
    path.write_bytes(b"".join(lines))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_lean_read, "BLOCK_BYTES", block_bytes)
        sizes = frozenset({0, len(lines) // 2, len(lines)})
        scanned = verify_alone(str(path), None, sizes)  # not the exact replay after it
        reference = verify_export(str(path), sizes_wanted=sizes)
    assert scanned is not None
    assert (scanned.tree_size, scanned.root_hash, scanned.head_leaf_hash, scanned.roots_at) == (
        reference.tree_size,
        reference.root_hash,
        reference.head_leaf_hash,
        reference.roots_at,
    )


@SETTINGS
@given(journals, st.sampled_from(TAMPERS), st.data(), st.sampled_from([1, 700, 1 << 20]))
def test_tampered_journals_fail_alike_in_blocks(
    tmp_path_factory: pytest.TempPathFactory,
    lines: tuple[bytes, ...],
    tamper: Any,
    data: st.DataObject,
    block_bytes: int,
) -> None:
    path = tmp_path_factory.mktemp("blocks") / "journal.jsonl"
    path.write_bytes(b"".join(tamper(data, list(lines))))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_lean_read, "BLOCK_BYTES", block_bytes)
        reference, lean = _both(path, 1)
        if reference[0] == "failed":  # the scan never passes what the reference refuses
            assert verify_alone(str(path), None, frozenset()) is None
    assert lean == reference

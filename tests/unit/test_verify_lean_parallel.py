"""The lean verifier over several processes: the same verdict as the reference, read
from a file, on the fixed tamper cases and on generated journals tampered at random."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from _lean_journal import Outcome, outcome_of, random_lines
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_verify_lean import EXPORT_TAMPERS, LINES, Edit
from test_verify_lean_properties import TAMPERS, journals

from ledger._lean_parallel import SLOTS, share_of_slots, verify_in_parallel
from ledger.verify import verify_export
from ledger.verify_lean import verify_export_lean


def both(path: Path, workers: int, sizes: tuple[int, ...] = ()) -> tuple[Outcome, Outcome]:
    reference = outcome_of(lambda: verify_export(str(path), sizes_wanted=sizes))
    lean = outcome_of(lambda: verify_export_lean(str(path), sizes_wanted=sizes, workers=workers))
    return reference, lean


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize(("edit", "check", "seq"), EXPORT_TAMPERS)
def test_parallel_names_the_reference_failure(
    tmp_path: Path, workers: int, edit: Edit, check: str | None, seq: int | None
) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b"".join(edit(list(LINES))))
    reference, lean = both(path, workers)
    assert lean == reference


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_parallel_verifies_a_long_journal(tmp_path: Path, workers: int) -> None:
    lines = random_lines(random.Random(11), 600)
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b"".join(lines))
    sizes = (0, 1, 256, 599, 600, 601)
    progress: list[int] = []
    reference = outcome_of(lambda: verify_export(str(path), sizes_wanted=sizes))
    lean = outcome_of(
        lambda: verify_export_lean(str(path), progress.append, sizes, workers=workers)
    )
    assert reference[0] == "ok" and lean == reference
    if workers > 1:  # the workers' own verdict, not the one-process replay after them
        assert verify_in_parallel(str(path), workers, None, frozenset(sizes)) is not None


def test_empty_export(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b"")
    reference, lean = both(path, 2, (0, 1))
    assert lean == reference


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 8, 16, 20])
def test_every_slot_has_a_worker(workers: int) -> None:
    share = share_of_slots(workers)
    assert len(share) == SLOTS and max(share) < max(workers, 1)
    if 1 < workers <= SLOTS // 2:
        assert set(share) >= set(range(1, workers))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(journals, st.sampled_from(TAMPERS), st.data(), st.sampled_from([2, 3]))
def test_parallel_tampered_journals_fail_alike(
    tmp_path_factory: pytest.TempPathFactory,
    lines: tuple[bytes, ...],
    tamper: object,
    data: st.DataObject,
    workers: int,
) -> None:
    path = tmp_path_factory.mktemp("lean") / "journal.jsonl"
    path.write_bytes(b"".join(tamper(data, list(lines))))  # type: ignore[operator]
    reference, lean = both(path, workers)
    assert lean == reference

"""The table of callers' last write positions (coalition/api/write_positions.py): a
caller's position is never below its last write, whatever other callers write; two
processes mapping one table see each other's writes; concurrent updates lose nothing."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from coalition.api.write_positions import WritePositions, create_shared_table

WRITERS = st.sampled_from(["partner:grocer", "partner:airline", "key:7", "key:8", "é"])
LSNS = st.integers(min_value=1, max_value=2**64 - 1)


@given(st.lists(st.tuples(WRITERS, LSNS), max_size=40))
def test_a_callers_position_is_at_least_its_last_write(writes: list[tuple[str, int]]) -> None:
    table = WritePositions()
    highest: dict[str, int] = {}
    for writer, lsn in writes:
        table.wrote(writer, lsn)
        highest[writer] = max(highest.get(writer, 0), lsn)
        for seen, wanted in highest.items():
            position = table.position(seen)
            assert position is not None and position >= wanted


def test_a_caller_that_never_wrote_has_no_position() -> None:
    assert WritePositions().position("partner:fuel") is None


def _write_many(path: str, writer: str, start: int) -> None:
    table = WritePositions(Path(path))
    for lsn in range(start, start + 2000):
        table.wrote(writer, lsn)
    table.close()


def test_processes_sharing_a_table_see_each_other_and_lose_no_update() -> None:
    path = create_shared_table()
    try:
        here = WritePositions(path)
        spawn = multiprocessing.get_context("spawn")  # as uvicorn starts its workers
        workers = [
            spawn.Process(target=_write_many, args=(str(path), "partner:grocer", n * 500))
            for n in range(4)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
            assert worker.exitcode == 0
        # The greatest position any of them wrote: none overwrote it with a smaller one.
        assert here.position("partner:grocer") == 3 * 500 + 1999
        here.close()
    finally:
        path.unlink()

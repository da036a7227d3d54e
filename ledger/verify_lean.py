"""Offline verification of an export, lean: the same verdict as ``ledger.verify``, faster.

``ledger.verify.verify_export`` (the reference) parses each line with the standard
library, encodes it again, and replays ``ledger.rules`` with an object per account, lot,
hold, posting and effect. This verifier checks exactly the same rules (docs/FORMAT.md
§1–§11) with orjson's round trip for canonical form (``ledger._lean_canonical`` says why
that is exact), flat tables for the state (``ledger._lean_state``) and in-place changes
with an undo log. Whenever the lean checks do not accept a line, the reference judges it
on the same state, so a failure is named — seq, check, expected, actual — by the
reference's own code (``ledger._lean_refer``).

First the scan (``ledger._lean_parallel``: ``workers`` processes, or this one for one)
only accepts the file or gives up on it; when it gives up, the exact replay
(``ledger._lean_replay``) goes through the file again line by line and names the first
failure.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from ledger._lean_chain import Chain
from ledger._lean_replay import Progress, replay_lines
from ledger._lean_state import LeanState
from ledger.state import State
from ledger.verify import Verified


def verify_export_lean(
    path: str,
    progress: Progress | None = None,
    sizes_wanted: Iterable[int] = (),
    workers: int = 1,
) -> Verified:
    """``ledger.verify.verify_export``'s result and failures, from ``workers`` processes.

    The result's ``state`` holds the chain position only (tree size, head, last time):
    the lean replay keeps accounts, lots and holds in flat tables, not as objects."""
    sizes = frozenset(sizes_wanted)
    from ledger._lean_parallel import verify_alone, verify_in_parallel

    if workers > 1:
        verified = verify_in_parallel(path, workers, progress, sizes)
    else:
        verified = verify_alone(path, progress, sizes)
    if verified is not None:
        return verified
    # Some line was not accepted: replay exactly, line by line, to name the failure.
    offsets = array("q")  # where each line starts: 8 bytes an entry
    with open(path, "rb") as export, open(path, "rb") as again:

        def entry_bytes(seq: int) -> bytes:
            again.seek(offsets[seq])
            return again.readline()[:-1]

        chain, st = replay_lines(_lines(export, offsets), entry_bytes, progress, sizes)
    return verified_of(chain, st.last_time_us)


def verify_lines_lean(
    lines: Iterable[bytes], progress: Progress | None = None, sizes_wanted: Iterable[int] = ()
) -> Verified:
    """``ledger.verify.verify_lines``'s counterpart, for lines in memory."""
    kept: list[bytes] = []

    def entry_bytes(seq: int) -> bytes:
        return kept[seq][:-1]

    def keeping() -> Iterator[bytes]:
        for line in lines:
            kept.append(line)
            yield line

    chain, st = replay_lines(keeping(), entry_bytes, progress, sizes_wanted)
    return verified_of(chain, st.last_time_us)


def verified_of(chain: Chain, last_time_us: int) -> Verified:
    position = State(
        tree_size=chain.tree_size, prev_leaf_hash_hex=chain.prev_hex, last_time_us=last_time_us
    )
    return Verified(
        chain.tree_size,
        chain.root_hash(),
        bytes.fromhex(chain.prev_hex),
        position,
        dict(chain.roots_at),
    )


def _lines(export: BinaryIO, offsets: array[int]) -> Iterator[bytes]:
    position = 0
    for line in export:
        offsets.append(position)
        position += len(line)
        yield line


__all__ = ["LeanState", "verify_export_lean", "verify_lines_lean"]

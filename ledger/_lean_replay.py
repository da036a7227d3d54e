"""The lean replay in one process: exact, entry by entry, as ``ledger.verify.Replay``.

Each line is checked by the lean checks (``ledger._lean_canonical``, ``_lean_shape``,
``_lean_rules``); a line they do not accept is undone and judged by the reference
(``ledger._lean_refer``), which names the failure or accepts the line. So the first
failure, its check, expected and actual values are the reference's by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ledger._lean_canonical import canonical_value
from ledger._lean_chain import Chain
from ledger._lean_refer import judge_line
from ledger._lean_rules import EntryBytes, apply_state
from ledger._lean_shape import Refer, check_shape
from ledger._lean_state import LeanState

Progress = Callable[[int], None]
PROGRESS_EVERY_ENTRIES = 50_000  # as ledger.verify


def replay_lines(
    lines: Iterable[bytes],
    entry_bytes: EntryBytes,
    progress: Progress | None = None,
    sizes_wanted: Iterable[int] = (),
) -> tuple[Chain, LeanState]:
    """Replay ``lines`` (each with its ``\\n``); raise the reference's first failure."""
    st = LeanState()
    chain = Chain(sizes_wanted)
    for seq, line in enumerate(lines):
        try:
            if line[-1:] != b"\n":
                raise Refer
            e = canonical_value(line[:-1])
            if type(e) is not dict:
                raise Refer
            time_us = check_shape(e, seq, chain.prev_hex, st)
            apply_state(e, seq, time_us, st, entry_bytes)
            st.accept()
        except Exception:  # whatever it was, the reference says what is wrong
            st.undo()
            judge_line(line, seq, st, entry_bytes)
        chain.feed(line[:-1])
        st.prev_hex = chain.prev_hex
        st.tree_size = seq + 1
        if progress is not None and st.tree_size % PROGRESS_EVERY_ENTRIES == 0:
            progress(st.tree_size)
    return chain, st

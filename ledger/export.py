"""Export the journal as ``journal.jsonl``: one entry per line, exactly its canonical bytes
followed by ``\\n``, in ``seq`` order (docs/FORMAT.md §11).

The export reads one consistent snapshot (REPEATABLE READ), so its last line is the
chain head at one instant, and is written to a temporary file renamed into place, so a
reader never sees half an export.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from ledger import reads
from ledger.journal import DEFAULT_CHAIN_ID

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class ExportSummary:
    tree_size: int
    head_leaf_hash: bytes
    bytes_written: int


def export_journal(
    conn: psycopg.Connection[Any],
    out_path: Path,
    *,
    chain_id: str = DEFAULT_CHAIN_ID,
    progress: Progress | None = None,
) -> ExportSummary:
    tmp_path = out_path.with_name(out_path.name + ".partial")
    written = 0
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        head = reads.head(conn, chain_id)
        with tmp_path.open("wb") as out:
            for stored in reads.iter_entries(conn, 0, head.tree_size, chain_id):
                out.write(stored.canonical)
                out.write(b"\n")
                written += len(stored.canonical) + 1
                if progress is not None and (stored.seq + 1) % 10_000 == 0:
                    progress(stored.seq + 1, head.tree_size)
            out.flush()
            os.fsync(out.fileno())
    os.replace(tmp_path, out_path)
    if progress is not None:
        progress(head.tree_size, head.tree_size)
    return ExportSummary(head.tree_size, head.head_leaf_hash, written)

"""What the CLI's verb groups share: exit codes, pinned keys read from text or @file, and
files written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def read_vkey(value: str) -> str:
    """A verifier key given on the command line, as text or as ``@path``."""
    return Path(value[1:]).read_text().strip() if value.startswith("@") else value.strip()


def write_atomically(path: Path, data: bytes) -> None:
    # A reader (or a crash) never sees half a receipt, statement or payment file.
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)

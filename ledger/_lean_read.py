"""An export read in blocks: the lines' bytes without their newlines, and where each starts.

Iterating a file object line by line costs a Python-level step per line, and so does
noting each line's offset (the lean replay needs it to read a corrected entry again,
docs/FORMAT.md §3a). Here one ``read`` takes about a megabyte, one ``split`` cuts it at
its line feeds, and the offsets are summed by ``itertools.accumulate`` in C: per line,
only the replay's own loop is left in Python.

A file's lines are what ``for line in file`` gives (the reference's reading): the bytes
up to and including each ``\\n``, and after the last one whatever is left. So a body here
is a line without its ``\\n``, and what follows the last ``\\n`` (empty in a valid export,
docs/FORMAT.md §11) is ``tail``: a last line without its ``\\n``, which the caller judges
as the reference does (``line_end``).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from itertools import accumulate
from typing import BinaryIO

_ONE_MORE = (1).__add__  # a C call, unlike a lambda
BLOCK_BYTES = 1 << 20  # a megabyte: about 2,500 entries, and the split's copy stays in cache


class Blocks:
    """The bodies of ``export``'s lines, a list per block; ``tail`` once they are done."""

    __slots__ = ("block_bytes", "export", "keep_offsets", "offsets", "tail")

    def __init__(
        self, export: BinaryIO, block_bytes: int | None = None, keep_offsets: bool = True
    ) -> None:
        self.export = export
        self.keep_offsets = keep_offsets  # only a replay that reads entries again needs them
        self.block_bytes = BLOCK_BYTES if block_bytes is None else block_bytes
        self.tail = b""
        # offsets[seq] is where line seq starts; one more: where the next one would
        self.offsets = array("q", [0])

    def __iter__(self) -> Iterator[list[bytes]]:
        carry = b""
        offsets = self.offsets if self.keep_offsets else None
        read = self.export.read
        while True:
            chunk = read(self.block_bytes)
            if not chunk:
                break
            data = carry + chunk if carry else chunk
            bodies = data.split(b"\n")
            carry = bodies.pop()  # after the last line feed: the start of the next line
            if not bodies:  # a line longer than a block: read on
                continue
            if offsets is not None:
                # each line is its body and one line feed; accumulate yields its start first
                starts = accumulate(map(_ONE_MORE, map(len, bodies)), initial=offsets[-1])
                next(starts)
                offsets.extend(starts)
            yield bodies
        self.tail = carry


def body_at(again: BinaryIO, offsets: array[int], seq: int) -> bytes:
    """Line ``seq``'s bytes without its newline, read again from the file."""
    start = offsets[seq]
    again.seek(start)
    return again.read(offsets[seq + 1] - start - 1)

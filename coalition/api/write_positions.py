"""Where each caller last wrote, as a WAL position, known to every worker process.

Read-your-writes (``api.replica``) holds a caller's reads on the standby until it has
replayed past the caller's last write. With ``coalition serve --workers N`` the write and
the read may land on different processes, so the positions live in a table every worker
maps: a file of ``SLOTS`` 8-byte positions (``COALITION_WRITE_POSITIONS_FILE``, made by
the serving parent in shared memory, ``/dev/shm`` where there is one). A caller's slot is
chosen by a hash of its name; a slot only ever grows (the greatest position any caller of
that slot wrote), so two callers sharing a slot cost each other at most a wait for a
position the standby replays anyway — never a stale read. A position once replayed costs
nothing, so slots never need expiring. Each update and read takes the file's lock
(``fcntl``), so a position is never read half-written nor lost to a concurrent update.

One process alone (``serve`` with one worker, tests) keeps the same table in memory.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import tempfile
import threading
from pathlib import Path

SLOTS = 65_536  # 512 KiB of positions
_SLOT = struct.Struct("<Q")
ENV = "COALITION_WRITE_POSITIONS_FILE"


def _slot(writer: str) -> int:
    digest = hashlib.blake2b(writer.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % SLOTS


class WritePositions:
    """The table: ``wrote(writer, lsn)`` after a commit, ``position(writer)`` before a read."""

    def __init__(self, path: Path | None = None) -> None:
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        if path is None:
            self._table = memoryview(bytearray(SLOTS * _SLOT.size))
            return
        self._fd = os.open(path, os.O_RDWR)
        assert os.fstat(self._fd).st_size == SLOTS * _SLOT.size, f"{path} is not a table"
        self._map = mmap.mmap(self._fd, SLOTS * _SLOT.size)
        self._table = memoryview(self._map)

    @classmethod
    def from_env(cls) -> WritePositions:
        path = os.environ.get(ENV)
        return cls(Path(path) if path else None)

    def wrote(self, writer: str, lsn: int) -> None:
        offset = _slot(writer) * _SLOT.size
        with self._locked(fcntl.LOCK_EX):
            (current,) = _SLOT.unpack_from(self._table, offset)
            if lsn > current:
                _SLOT.pack_into(self._table, offset, lsn)

    def position(self, writer: str) -> int | None:
        with self._locked(fcntl.LOCK_SH):
            (lsn,) = _SLOT.unpack_from(self._table, _slot(writer) * _SLOT.size)
        return lsn or None

    def _locked(self, kind: int) -> _Locked:
        return _Locked(self._thread_lock, self._fd, kind)

    def close(self) -> None:
        if self._fd is not None:
            self._table.release()
            self._map.close()
            os.close(self._fd)
            self._fd = None


class _Locked:
    """The threads of this process in turn, then the processes (``fcntl`` locks are
    per process, so threads of one process would not exclude each other by it alone)."""

    def __init__(self, lock: threading.Lock, fd: int | None, kind: int) -> None:
        self._lock, self._fd, self._kind = lock, fd, kind

    def __enter__(self) -> None:
        self._lock.acquire()
        if self._fd is not None:
            fcntl.flock(self._fd, self._kind)

    def __exit__(self, *_exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._lock.release()


def create_shared_table() -> Path:
    """A zeroed table file for the workers of one ``serve`` to share (the caller removes
    it when they have stopped)."""
    shm = Path("/dev/shm")
    descriptor, name = tempfile.mkstemp(
        prefix="coalition-write-positions-", dir=shm if shm.is_dir() else None
    )
    with os.fdopen(descriptor, "wb") as table:
        table.truncate(SLOTS * _SLOT.size)
    return Path(name)

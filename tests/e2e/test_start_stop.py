"""`coalition serve` as an operator starts and stops it, on the embedded PostgreSQL it
starts itself: SIGTERM and SIGINT stop the server and that PostgreSQL, with no traceback;
`/readyz` answers without writing a log line per call.

Each test has its own var/ directory (its own embedded server), apart from the suite's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS_MAX = 120.0
STOP_SECONDS_MAX = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _coalition() -> list[str]:
    script = Path(sys.executable).with_name("coalition")
    return [str(script)] if script.exists() else [sys.executable, "-m", "coalition.cli"]


def _postgres_running_on(data_dir: Path) -> list[str]:
    """Processes whose command line names this data directory (the postmaster has -D)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "postgres" in cmdline and str(data_dir) in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def _start(
    tmp_path: Path, workers: int, log: Path | None = None
) -> tuple[subprocess.Popen[str], str, Path]:
    var = tmp_path / "var"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(COALITION_VAR_DIR=str(var), COALITION_SCHEDULER="off")
    # The child keeps its own copy of the log's descriptor: ours closes at once.
    with contextlib.ExitStack() as files:
        out = subprocess.PIPE if log is None else files.enter_context(log.open("w"))
        process = subprocess.Popen(
            [*_coalition(), "serve", "--port", str(port), "--workers", str(workers), "--no-seed"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.PIPE if log is None else subprocess.STDOUT,
            text=True,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_SECONDS_MAX
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return process, base, var
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"serve did not become ready: {process.communicate()}")


@pytest.mark.parametrize(
    ("how", "workers"),
    [(signal.SIGTERM, 1), (signal.SIGINT, 1), (signal.SIGTERM, 2)],
    ids=["sigterm-1", "sigint-1", "sigterm-2-workers"],
)
def test_a_signal_stops_the_server_and_its_postgres_without_a_traceback(
    tmp_path: Path, how: signal.Signals, workers: int
) -> None:
    process, _base, var = _start(tmp_path, workers)
    assert _postgres_running_on(var), "serve should have started its embedded PostgreSQL"
    process.send_signal(how)
    _out, err = process.communicate(timeout=STOP_SECONDS_MAX)
    assert process.returncode == 0, err
    assert "Traceback" not in err, err
    deadline = time.monotonic() + 30
    while _postgres_running_on(var) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _postgres_running_on(var) == []


def test_readyz_writes_no_log_line_per_call(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    process, base, _var = _start(tmp_path, 1, log)
    try:
        time.sleep(1.0)  # whatever start-up logs is behind us; now only the calls
        before = log.read_text()
        for _ in range(5):
            assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200
        time.sleep(1.0)
        assert log.read_text() == before, log.read_text()[len(before) :]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=STOP_SECONDS_MAX)

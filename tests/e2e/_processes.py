"""Stopping a server process a test started: as a deployment would (SIGTERM, which
``coalition serve`` passes to its workers), and killed only if it will not stop."""

from __future__ import annotations

import signal
import subprocess

STOP_SECONDS_MAX = 30


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_SECONDS_MAX)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

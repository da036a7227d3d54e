#!/usr/bin/env python3
"""The two commands of the README's Quick start, needing nothing but Python 3.11+.

    python3 tasks.py run    set up .venv, then serve the API on a demo coalition
    python3 tasks.py test   set up .venv, then lint, type-check and run every test

With no DATABASE_URL, an embedded PostgreSQL (pip wheel) is started under var/.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".installed-from"


def _setup() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - tasks.py runs before any venv exists
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print("creating .venv …", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing the project and its test tools into .venv …", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    # The build backend's notices about editable installs are for packagers, not for
    # someone starting the project: keep them off the first screen a newcomer sees.
    quiet = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run([*pip, "-e", f"{ROOT}[test,embedded]"], check=True, env=quiet)
    STAMP.write_text(wanted)


def _run(*command: str) -> int:
    return subprocess.run(command, cwd=ROOT).returncode


def _serve(*command: str) -> int:
    """Run the server until it stops. It stops cleanly on SIGINT or SIGTERM (docs/DESIGN.md,
    "Start and stop"); here either is passed on to it and waited out, never a traceback.
    (Ctrl-C reaches it from the terminal too: it takes the first and ignores the second.)"""
    child = subprocess.Popen(command, cwd=ROOT)

    def pass_on(signal_number: int, frame: object) -> None:
        child.send_signal(signal_number)

    signal.signal(signal.SIGTERM, pass_on)
    signal.signal(signal.SIGINT, pass_on)
    return child.wait()


def main(argv: list[str]) -> int:
    if len(argv) < 1 or argv[0] not in ("run", "test"):
        print(__doc__, file=sys.stderr)
        return 2
    _setup()
    if argv[0] == "run":
        return _serve(str(BIN / "coalition"), "serve", *argv[1:])
    for check in ([str(BIN / "ruff"), "check", "."], [str(BIN / "mypy")]):
        code = _run(*check)
        if code:
            return code
    workers = ["-n", os.environ.get("TEST_WORKERS", "2")]
    return _run(str(BIN / "pytest"), *workers, *argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

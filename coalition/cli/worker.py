"""CLI verb ``worker``: run the scheduled jobs (``coalition.jobs``) in a process of their
own, until SIGTERM or SIGINT (``serve`` starts the same scheduler: ``coalition.jobs``)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from coalition.cli._common import EXIT_OK, EXIT_USAGE, require_current_schema
from coalition.database import database_url
from coalition.jobs import scheduled_jobs, start_scheduler
from coalition.keys import load_signer
from coalition.settings import Settings


def add_verbs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "worker",
        help="run the scheduled jobs (expiry, hold time-outs, period close, checkpoints)"
        " until SIGTERM or SIGINT",
        description="Cadences from COALITION_JOB_<NAME>_SECONDS (0 = off) and the settlement"
        " cycle from COALITION_SETTLE_CYCLE; any number of workers and servers may run at"
        " once: an advisory lock per job lets one run it at a time.",
    )
    p.set_defaults(handler=worker)


def worker(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
        scheduled_jobs("", settings, load_signer(settings))  # bad cadences: said before start
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()

    def stopping(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    with database_url() as url:
        require_current_schema(url)
        scheduler = start_scheduler(url, settings)
        names = ", ".join(f"{j.name} every {j.interval_seconds:g} s" for j in scheduler.jobs)
        print(f"worker running: {names or 'no job (every cadence is 0)'}", flush=True)
        try:
            while not stop.wait(3600):
                pass
        finally:
            scheduler.stop()
    print("worker stopped", flush=True)
    return EXIT_OK

"""Stop ``coalition serve`` on SIGTERM or SIGINT by unwinding, not by dying.

Left to the defaults, SIGTERM kills the process where it stands: uvicorn stops serving
gracefully, then raises the signal again with its default action, so the ``with`` and
``finally`` blocks on the way out (the checkpointer, the embedded PostgreSQL it started)
never run and the database outlives the server. SIGINT becomes a KeyboardInterrupt
traceback. Inside ``stop_on_signals`` either signal raises ``Stopped`` in the main
thread instead, once: every block on the way out runs, and the caller exits cleanly. A
second signal while that happens is ignored, so that it cannot cut the cleanup short.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
    """Raised by the handler: the process was asked to stop by ``signal_number``."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


@contextmanager
def stop_on_signals() -> Iterator[None]:
    stopping = False

    def handler(signal_number: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise Stopped(signal_number)

    previous = {number: signal.signal(number, handler) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, action in previous.items():
            signal.signal(number, action)

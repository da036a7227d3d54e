"""Progress for long CLI jobs: a line that rewrites itself on a terminal, sparse lines in logs."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int | None = None, every_seconds: float = 1.0) -> None:
        self.label = label
        self.total = total
        self.every_seconds = every_seconds
        self.started = time.monotonic()
        self._last_shown = 0.0
        self._tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int | None = None) -> None:
        total = total if total is not None else self.total
        now = time.monotonic()
        if now - self._last_shown < self.every_seconds and done != total:
            return
        self._last_shown = now
        rate = done / max(now - self.started, 1e-9)
        share = f"/{total:,} ({100 * done / total:.0f}%)" if total else ""
        line = f"{self.label}: {done:,}{share}, {rate:,.0f}/s"
        if self._tty:
            sys.stderr.write("\r" + line + "\x1b[K")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self._tty:
            sys.stderr.write("\n")
            sys.stderr.flush()

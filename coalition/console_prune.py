"""The scheduler's ``console`` job: delete the console's rows that count for nothing any
more, so that their tables are bounded by use, not by the deployment's age.

- sessions that ended (signed out, pushed out by a key's newer sessions) or expired
  more than ``SESSION_KEEP_SECONDS`` ago: a session row is looked up by the SHA-256 of a
  token, and one past its end opens nothing (coalition/web/sessions.py). The grace lets
  an operator still see, for a day, which key had a session that just ended.
- sign-in attempts older than the limit's window (coalition/signin_limit.py).

Each run deletes at most ``ROWS_PER_RUN_MAX`` rows of each table, oldest first, in short
statements, so a backlog (the first run on an old deployment) is worked off over a few
runs without a long lock; the run says whether more is left.
"""

from __future__ import annotations

from dataclasses import dataclass

from coalition import signin_limit
from coalition.context import Conn

SESSION_KEEP_SECONDS = 86_400
ROWS_PER_RUN_MAX = 50_000
_BATCH_ROWS = 5_000


@dataclass(frozen=True, slots=True)
class Pruned:
    sessions: int
    attempts: int
    more_left: bool


def prune_console(conn: Conn, limit: signin_limit.SigninLimit, now_us: int) -> Pruned:
    before_us = now_us - SESSION_KEEP_SECONDS * 1_000_000
    sessions = 0
    more = False
    while sessions < ROWS_PER_RUN_MAX:
        cursor = conn.execute(
            "DELETE FROM coalition_console_session WHERE token_sha256 IN"
            " (SELECT token_sha256 FROM coalition_console_session"
            "  WHERE expires_at_us <= %(before)s OR ended_at_us <= %(before)s LIMIT %(n)s)",
            {"before": before_us, "n": min(_BATCH_ROWS, ROWS_PER_RUN_MAX - sessions)},
        )
        sessions += cursor.rowcount
        if cursor.rowcount < _BATCH_ROWS:
            break
    else:
        more = True
    attempts = 0
    since_us = now_us - limit.window_seconds * 1_000_000
    while attempts < ROWS_PER_RUN_MAX:
        cursor = conn.execute(
            "DELETE FROM coalition_signin_attempt WHERE attempt_id IN"
            " (SELECT attempt_id FROM coalition_signin_attempt WHERE at_us <= %s"
            "  ORDER BY at_us LIMIT %s)",
            (since_us, min(_BATCH_ROWS, ROWS_PER_RUN_MAX - attempts)),
        )
        attempts += cursor.rowcount
        if cursor.rowcount < _BATCH_ROWS:
            break
    else:
        more = True
    return Pruned(sessions, attempts, more)

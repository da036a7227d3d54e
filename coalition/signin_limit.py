"""A limit on failed console sign-ins, per client address and overall, that holds across
every worker process: the attempts are rows in PostgreSQL (``coalition_signin_attempt``),
not a dict of one process.

An attempt is *reserved* — written as a failure — before its key is checked, under a
transaction-scoped advisory lock on its address, and deleted when the key proves good.
So a burst of concurrent guesses from one address, spread over several workers, is
counted in full: the check and the write are one step, and no guess is checked without
having been counted first. A good key's attempt leaves no trace, so a person signing in
never counts against anyone.

Per address: at most ``per_address_max`` failures in ``window_seconds``; another
address's failures never block it. Overall: at most ``total_max`` failures in the window
from all addresses together — a breaker against a guess spread over many addresses;
while it is open everyone waits (a person signing in too, by design: a distributed
guess at the keys is worth stopping at that price). Answers say when to retry.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from coalition.context import Conn

SIGNIN_LOCK = 727_021  # pg_advisory_xact_lock's first key (727_020: scheduled jobs)
TOTAL_LOCK_KEY = 0  # the second key of the overall count's lock
CLIENT_LENGTH_MAX = 100
DEFAULTS = {"per_address_max": 10, "total_max": 500, "window_seconds": 900}


@dataclass(frozen=True, slots=True)
class SigninLimit:
    per_address_max: int = DEFAULTS["per_address_max"]
    total_max: int = DEFAULTS["total_max"]
    window_seconds: int = DEFAULTS["window_seconds"]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SigninLimit:
        """``COALITION_SIGNIN_FAILURES_PER_ADDRESS``, ``COALITION_SIGNIN_FAILURES_TOTAL``
        and ``COALITION_SIGNIN_WINDOW_SECONDS``; the defaults above otherwise."""
        env = os.environ if env is None else env
        found: dict[str, int] = {}
        for field, name, low, high in (
            ("per_address_max", "COALITION_SIGNIN_FAILURES_PER_ADDRESS", 1, 10_000),
            ("total_max", "COALITION_SIGNIN_FAILURES_TOTAL", 1, 1_000_000),
            ("window_seconds", "COALITION_SIGNIN_WINDOW_SECONDS", 1, 86_400),
        ):
            text = env.get(name, "").strip()
            value = int(text) if text.isdigit() else DEFAULTS[field] if not text else -1
            if not low <= value <= high:
                raise ValueError(f"{name} is a whole number from {low} to {high} (not {text!r})")
            found[field] = value
        return cls(**found)


@dataclass(frozen=True, slots=True)
class Reserved:
    attempt_id: int


@dataclass(frozen=True, slots=True)
class Limited:
    retry_after_seconds: int
    overall: bool  # the overall breaker, not this address's own failures


def reserve(conn: Conn, limit: SigninLimit, client: str, now_us: int) -> Reserved | Limited:
    """Count an attempt as a failure before its key is checked, or refuse it when the
    address (or everyone) has failed too often in the window."""
    client = client[:CLIENT_LENGTH_MAX] or "unknown"
    since_us = now_us - limit.window_seconds * 1_000_000
    with conn.transaction():
        # One lock per address serialises its attempts across processes; the overall
        # count is read without a lock of its own: it is a breaker, not an exact quota.
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (SIGNIN_LOCK, client))
        mine = _oldest_of_last(conn, "client = %s AND", (client,), since_us, limit.per_address_max)
        if mine is not None:
            return Limited(_retry_after(mine, limit, now_us), overall=False)
        everyone = _oldest_of_last(conn, "", (), since_us, limit.total_max)
        if everyone is not None:
            return Limited(_retry_after(everyone, limit, now_us), overall=True)
        row = conn.execute(
            "INSERT INTO coalition_signin_attempt (client, at_us) VALUES (%s, %s)"
            " RETURNING attempt_id",
            (client, now_us),
        ).fetchone()
    assert row is not None
    return Reserved(int(row[0]))


def succeeded(conn: Conn, reserved: Reserved) -> None:
    """The key was good: the attempt was no failure."""
    conn.execute(
        "DELETE FROM coalition_signin_attempt WHERE attempt_id = %s", (reserved.attempt_id,)
    )


def _oldest_of_last(
    conn: Conn, where: str, params: tuple[str, ...], since_us: int, count_max: int
) -> int | None:
    """When the limit is reached, the time of the oldest of the last ``count_max`` failures
    in the window (its leaving the window frees a place); None below the limit. Reads at
    most ``count_max`` rows, by index."""
    row = conn.execute(
        "SELECT min(at_us), count(*) FROM (SELECT at_us FROM coalition_signin_attempt"
        f" WHERE {where} at_us > %s ORDER BY at_us DESC LIMIT %s) recent",
        (*params, since_us, count_max),
    ).fetchone()
    if row is None or int(row[1]) < count_max:
        return None
    return int(row[0])


def _retry_after(oldest_us: int, limit: SigninLimit, now_us: int) -> int:
    free_at_us = oldest_us + limit.window_seconds * 1_000_000
    return max(1, -(-(free_at_us - now_us) // 1_000_000))

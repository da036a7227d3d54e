"""The journal's long reads — settlement runs and online verification — from the standby.

A settlement run reads every entry up to its cut (a million and more) and a full
verification every row: on the primary they compete with the tills. An entry never
changes once written, so a streaming standby (``DATABASE_REPLICA_URL``) answers such a
read exactly as the primary would once it holds the prefix the read needs: its chain is
at least that long. The standby's chain head is written in the same transaction as the
entries it counts, so a standby snapshot that shows the head shows every entry under it.

So a read names the tree size it needs (a run its cut; a verification the primary's
tree now), waits for the standby to hold it (at most ``STANDBY_WAIT_SECONDS_MAX``), and
else reads the primary. A standby that cannot answer — unreachable, or a query cancelled
by a recovery conflict, or any database error during the read — is given up for that
read, which is done again from the start on the primary: these reads are functions of
the prefix alone, so a second reading gives the same answer. Nothing a write is judged
on is read here: runs are recorded, and verifications recorded, on the primary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from coalition import database
from ledger.journal import DEFAULT_CHAIN_ID

T = TypeVar("T")
Conn = psycopg.Connection[Any]

STANDBY_WAIT_SECONDS_MAX = 5.0  # past this the read goes to the primary
STANDBY_POLL_SECONDS = 0.02
STANDBY_CONNECT_TIMEOUT_SECONDS = 3

_log = logging.getLogger("coalition.standby")


def read_prefix(
    primary: Conn,
    tree_size_needed: int,
    read: Callable[[Conn], T],
    *,
    what: str,
    chain_id: str = DEFAULT_CHAIN_ID,
    wait_seconds_max: float | None = None,  # STANDBY_WAIT_SECONDS_MAX
) -> T:
    """``read(conn)`` on the standby once its chain holds ``tree_size_needed`` entries,
    else (or if the standby fails) on ``primary``. ``read`` must depend only on the
    journal's first ``tree_size_needed`` entries (or more, for a verification)."""
    url = database.replica_url()
    if url is None:
        return read(primary)
    if wait_seconds_max is None:
        wait_seconds_max = STANDBY_WAIT_SECONDS_MAX
    try:
        with psycopg.connect(
            url, autocommit=True, connect_timeout=STANDBY_CONNECT_TIMEOUT_SECONDS
        ) as standby:
            if _holds(standby, chain_id, tree_size_needed, wait_seconds_max):
                result = read(standby)
                _log.info("%s: read on the standby (%d entries needed)", what, tree_size_needed)
                return result
            _log.info(
                "%s: the standby has not replayed %d entries within %.1f s; reading the primary",
                what,
                tree_size_needed,
                wait_seconds_max,
            )
    except psycopg.Error as exc:
        _log.warning("%s: the standby cannot answer (%s); reading the primary", what, exc)
    return read(primary)


def chain_tree_size(primary: Conn, chain_id: str = DEFAULT_CHAIN_ID) -> int:
    """How long the chain is on this server now (0 before its first append)."""
    row = primary.execute(
        "SELECT tree_size FROM ledger_chain WHERE chain_id = %s", (chain_id,)
    ).fetchone()
    return 0 if row is None else int(row[0])


def _holds(standby: Conn, chain_id: str, tree_size: int, wait_seconds_max: float) -> bool:
    deadline = time.monotonic() + wait_seconds_max
    while True:
        if chain_tree_size(standby, chain_id) >= tree_size:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(STANDBY_POLL_SECONDS)

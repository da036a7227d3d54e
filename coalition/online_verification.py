"""Online verification of the journal, run by the scheduler's ``verify`` job and by
``coalition verify`` (without ``--export``), and its record (``coalition_verification``,
migration 0017): when it ran, full or incremental, what it verified (tree size, root) or
its first failure, and where the next incremental run resumes.

Which run:

- **full** (``ledger.verify_db.verify_database``: the replay of every entry, its rules,
  and every stored row): the first time, when the last full one is older than
  ``full_every_seconds``, and after an incremental run failed (to name the first
  failure of the whole journal). After a failed full run the next is due
  ``full_every_seconds`` later (or at once with ``coalition verify``), not at each tick:
  a journal that failed stays failed until a person looks, and the record says so.
- **incremental** (``ledger.verify_extend``): otherwise, from the tree the last run
  verified, at most ``entries_per_run`` entries. It checks hashes, links, columns and
  every signed checkpoint's root on the way, not the rules nor rows verified before;
  that is why full runs go on (docs/DESIGN.md §8).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from coalition import standby
from ledger.journal import DEFAULT_CHAIN_ID
from ledger.verify import VerificationFailed, Verified
from ledger.verify_db import verify_database
from ledger.verify_extend import EMPTY, VerifiedTree, extend_verified

FAILURE_LENGTH_MAX = 1000
ENV = {  # name: (default, lowest, highest)
    "COALITION_VERIFY_FULL_SECONDS": (86_400, 60, 366 * 86_400),
    "COALITION_VERIFY_ENTRIES_PER_RUN": (100_000, 1, 10_000_000),
}


@dataclass(frozen=True, slots=True)
class VerifyPolicy:
    full_every_seconds: int = 86_400
    entries_per_run: int = 100_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> VerifyPolicy:
        env = os.environ if env is None else env
        values = []
        for name, (default, low, high) in ENV.items():
            text = env.get(name, "").strip()
            value = default if not text else int(text) if text.isdigit() else -1
            if not low <= value <= high:
                raise ValueError(f"{name} is a whole number from {low} to {high} (not {text!r})")
            values.append(value)
        return cls(*values)


@dataclass(frozen=True, slots=True)
class LastVerification:
    run_at_us: int
    kind: str  # "full" or "incremental"
    ok: bool
    from_size: int  # an incremental run's start; 0 for a full one
    tree_size: int  # verified (ok) or reached before the failure
    root_hash: bytes | None
    failure: str  # the first failure, "" when ok
    duration_us: int
    by: str  # "scheduler" or "cli"
    last_full_at_us: int | None


_COLUMNS = (
    "last_run_at_us, last_kind, last_ok, last_from_size, last_tree_size, last_root,"
    " last_failure, last_duration_us, last_by, last_full_at_us"
)


def last_verification(conn: Any, chain_id: str = DEFAULT_CHAIN_ID) -> LastVerification | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM coalition_verification WHERE chain_id = %s", (chain_id,)
    ).fetchone()
    if row is None:
        return None
    at_us, kind, ok, from_size, size, root, failure, duration_us, by, full_at_us = row
    return LastVerification(
        int(at_us),
        kind,
        bool(ok),
        int(from_size),
        int(size),
        None if root is None else bytes(root),
        failure,
        int(duration_us),
        by,
        None if full_at_us is None else int(full_at_us),
    )


def verify_online(
    conn: psycopg.Connection[Any],
    policy: VerifyPolicy,
    now_us: int,
    *,
    by: str,
    force_full: bool = False,
    chain_id: str = DEFAULT_CHAIN_ID,
) -> LastVerification | None:
    """Run the verification that is due and record it; None when none is due (a failed
    full run waits for its cadence). ``conn`` is in autocommit."""
    row = conn.execute(
        "SELECT last_ok, last_kind, verified_size, verified_frontier, verified_leaf_hash,"
        " last_full_at_us FROM coalition_verification WHERE chain_id = %s",
        (chain_id,),
    ).fetchone()
    ok, kind, size, frontier, leaf, full_at_us = row if row is not None else (None,) * 6
    full_due = full_at_us is None or now_us - full_at_us >= policy.full_every_seconds * 10**6
    if ok is False and kind == "full" and not full_due and not force_full:
        return None
    full = force_full or not ok or size is None or full_due
    start = EMPTY
    if not full:
        start = _tree(size, frontier, leaf)
    started = time.monotonic()
    outcome: VerifiedTree | VerificationFailed
    # What the primary holds now is what this run must reach: the standby (when there is
    # one) reads it once it holds that much, so a run never verifies less than the last.
    needed = standby.chain_tree_size(conn, chain_id)
    try:
        if full:
            verified = standby.read_prefix(
                conn,
                needed,
                lambda journal: verify_database(journal, chain_id=chain_id),
                what="full verification",
                chain_id=chain_id,
            )
            outcome = VerifiedTree(
                verified.tree_size, verified.frontier_hashes, verified.head_leaf_hash
            )
        else:
            outcome = standby.read_prefix(
                conn,
                needed,
                lambda journal: extend_verified(journal, start, policy.entries_per_run, chain_id),
                what="incremental verification",
                chain_id=chain_id,
            ).tree
    except VerificationFailed as failure:
        outcome = failure
    duration_us = int((time.monotonic() - started) * 1_000_000)
    _record(conn, chain_id, now_us, full, start.tree_size, outcome, duration_us, by)
    return last_verification(conn, chain_id)


def _tree(size: Any, frontier: Any, leaf: Any) -> VerifiedTree:
    return VerifiedTree(int(size), tuple(bytes(h) for h in frontier), bytes(leaf))


def record_full(
    conn: Any,
    started_us: int,
    outcome: Verified | VerificationFailed,
    duration_us: int,
    *,
    by: str,
    chain_id: str = DEFAULT_CHAIN_ID,
) -> None:
    """Record a full verification run elsewhere (``coalition verify``, with its progress
    and the roots it was asked for)."""
    if isinstance(outcome, Verified):
        tree = VerifiedTree(outcome.tree_size, outcome.frontier_hashes, outcome.head_leaf_hash)
        _record(conn, chain_id, started_us, True, 0, tree, duration_us, by)
    else:
        _record(conn, chain_id, started_us, True, 0, outcome, duration_us, by)


def _record(
    conn: Any,
    chain_id: str,
    now_us: int,
    full: bool,
    from_size: int,
    outcome: VerifiedTree | VerificationFailed,
    duration_us: int,
    by: str,
) -> None:
    ok = isinstance(outcome, VerifiedTree)
    values = {
        "chain": chain_id,
        "at": now_us,
        "kind": "full" if full else "incremental",
        "ok": ok,
        "from": 0 if full else from_size,
        "size": outcome.tree_size if isinstance(outcome, VerifiedTree) else from_size,
        "root": outcome.root_hash if isinstance(outcome, VerifiedTree) else None,
        "failure": "" if ok else str(outcome)[:FAILURE_LENGTH_MAX],
        "duration": max(0, duration_us),
        "by": by,
        "vsize": outcome.tree_size if isinstance(outcome, VerifiedTree) else None,
        "frontier": list(outcome.frontier_hashes) if isinstance(outcome, VerifiedTree) else None,
        "leaf": outcome.head_leaf_hash if isinstance(outcome, VerifiedTree) else None,
        "full_at": now_us if full else None,
    }
    conn.execute(
        "INSERT INTO coalition_verification AS v (chain_id, last_run_at_us, last_kind, last_ok,"
        " last_from_size, last_tree_size, last_root, last_failure, last_duration_us, last_by,"
        " verified_size, verified_frontier, verified_leaf_hash, last_full_at_us)"
        " VALUES (%(chain)s, %(at)s, %(kind)s, %(ok)s, %(from)s, %(size)s, %(root)s,"
        " %(failure)s, %(duration)s, %(by)s, %(vsize)s, %(frontier)s, %(leaf)s, %(full_at)s)"
        " ON CONFLICT (chain_id) DO UPDATE SET last_run_at_us = excluded.last_run_at_us,"
        " last_kind = excluded.last_kind, last_ok = excluded.last_ok,"
        " last_from_size = excluded.last_from_size, last_tree_size = excluded.last_tree_size,"
        " last_root = excluded.last_root, last_failure = excluded.last_failure,"
        " last_duration_us = excluded.last_duration_us, last_by = excluded.last_by,"
        " verified_size = excluded.verified_size,"
        " verified_frontier = excluded.verified_frontier,"
        " verified_leaf_hash = excluded.verified_leaf_hash,"
        " last_full_at_us = COALESCE(excluded.last_full_at_us, v.last_full_at_us)",
        values,
    )

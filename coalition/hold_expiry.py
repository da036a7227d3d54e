"""``hold.expired`` events: a hold expires by time, with no entry (and so no appending
transaction) to announce it, so a sweep does, once per hold.

A hold can no longer be captured once an entry's time would be past its expiry. Entry
times never go backwards (``max(clock, last entry's time)``), so once the chain's last
time has passed a hold's expiry, no later capture can take it. The sweep reads the head
``FOR SHARE`` (as checkpoint signing does: it waits for an append in flight, whose
capture it then sees) and announces every hold still active whose expiry is at or
before ``max(last entry time, now − CLOCK_SKEW_SECONDS)``: the second bound lets a quiet
journal announce expiries too, and is exact as long as no appending process's clock
lags this one's by more than that. A hold voided after it expired (allowed, FORMAT.md
§6) gets its ``hold.voided`` event as well. A hold the holds job (coalition/hold_timeout.py)
closes is announced by that job, in its void's transaction, unless a sweep was first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from coalition import outbox
from coalition.context import Conn
from ledger.journal import DEFAULT_CHAIN_ID

CLOCK_SKEW_SECONDS = 5
HOLDS_PER_SWEEP_MAX = 500
HOLD_NOTICES_PER_RUN_MAX = 50_000


@dataclass(frozen=True, slots=True)
class ExpiredHold:
    hold_seq: int
    points: int
    expires_us: int
    authorised: bytes  # the canonical bytes of the hold's ``authorise`` entry


def sweep(conn: Conn, now_us: int) -> int:
    """Announce the active holds that expired; how many. Its own transaction."""
    with conn.transaction():
        row = conn.execute(
            "SELECT last_time_us FROM ledger_chain WHERE chain_id = %s FOR SHARE",
            (DEFAULT_CHAIN_ID,),
        ).fetchone()
        if row is None:
            return 0
        horizon_us = max(int(row[0]), now_us - CLOCK_SKEW_SECONDS * 1_000_000)
        # Active holds only: one the holds job voids is announced by that job, in the
        # transaction of its void (``announce``), so this read stays as small as the
        # set of active holds and never grows with the journal's history.
        rows = conn.execute(
            "SELECT h.hold_seq, h.amount, h.expires_us, e.canonical FROM ledger_hold h"
            " JOIN ledger_entry e ON e.chain_id = %s AND e.seq = h.hold_seq"
            " WHERE h.chain_id = e.chain_id AND h.status = 'active' AND h.expires_us <= %s"
            " AND NOT EXISTS ("
            " SELECT 1 FROM coalition_hold_expiry_notice n WHERE n.hold_seq = h.hold_seq)"
            " ORDER BY h.hold_seq LIMIT %s",
            (DEFAULT_CHAIN_ID, horizon_us, HOLDS_PER_SWEEP_MAX),
        ).fetchall()
        return announce(conn, [ExpiredHold(int(r[0]), int(r[1]), int(r[2]), r[3]) for r in rows])


def announce(conn: Conn, holds: list[ExpiredHold]) -> int:
    """In the caller's transaction, which holds the chain's head (the sweep ``FOR
    SHARE``, the holds job's void ``FOR UPDATE``): a ``hold.expired`` event for each of
    ``holds`` not announced before; how many."""
    if not holds:
        return 0
    done = {
        int(r[0])
        for r in conn.execute(
            "SELECT hold_seq FROM coalition_hold_expiry_notice WHERE hold_seq = ANY(%s)",
            ([h.hold_seq for h in holds],),
        ).fetchall()
    }
    events = []
    for hold in holds:
        meta = json.loads(bytes(hold.authorised))["meta"]
        partner = meta.get("partner")
        if hold.hold_seq in done or not partner:
            continue
        data = {
            "hold": hold.hold_seq,
            "ref": meta.get("ref"),
            "member": meta.get("member"),
            "points": hold.points,
        }
        events.append(outbox.Event(partner, "hold.expired", hold.expires_us, data))
    if not events:
        return 0
    outbox.record(conn, events)
    # Two sweepers at once (both hold the head FOR SHARE): the second's insert waits for
    # the first's commit and then conflicts, rolling its events back with it.
    conn.execute(
        "INSERT INTO coalition_hold_expiry_notice (hold_seq, event_seq)"
        " SELECT unnest(%s::bigint[]), last_seq FROM coalition_event_head",
        ([e.payload["hold"] for e in events],),
    )
    return len(events)


def prune_notices(conn: Conn, rows_max: int = HOLD_NOTICES_PER_RUN_MAX) -> int:
    """Forget the notices of holds that are no longer active; how many (the outbox job's).

    A notice exists so that an expired hold is announced once. Only an *active* hold can
    be announced (the sweep reads active holds; the holds job announces the hold it is
    voiding), and a hold once captured or voided is never active again, so its notice can
    never be needed. A void in flight leaves its hold active to this statement until it
    commits, so its notice stays until then. The table is then as small as the set of
    expired holds not yet closed."""
    (count,) = conn.execute(
        "WITH gone AS (DELETE FROM coalition_hold_expiry_notice WHERE hold_seq IN ("
        " SELECT n.hold_seq FROM coalition_hold_expiry_notice n"
        " JOIN ledger_hold h ON h.chain_id = %s AND h.hold_seq = n.hold_seq"
        " WHERE h.status <> 'active' ORDER BY n.hold_seq LIMIT %s) RETURNING 1)"
        " SELECT count(*) FROM gone",
        (DEFAULT_CHAIN_ID, rows_max),
    ).fetchone() or (0,)
    return int(count)

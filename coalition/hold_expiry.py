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
§6) gets its ``hold.voided`` event as well.
"""

from __future__ import annotations

import json

from coalition import outbox
from coalition.context import Conn
from ledger.journal import DEFAULT_CHAIN_ID

CLOCK_SKEW_SECONDS = 5
HOLDS_PER_SWEEP_MAX = 500


def sweep(conn: Conn, now_us: int) -> int:
    """Announce the holds that expired; how many. Its own transaction."""
    with conn.transaction():
        row = conn.execute(
            "SELECT last_time_us FROM ledger_chain WHERE chain_id = %s FOR SHARE",
            (DEFAULT_CHAIN_ID,),
        ).fetchone()
        if row is None:
            return 0
        horizon_us = max(int(row[0]), now_us - CLOCK_SKEW_SECONDS * 1_000_000)
        rows = conn.execute(
            "SELECT h.hold_seq, h.amount, h.expires_us, e.canonical FROM ledger_hold h"
            " JOIN ledger_entry e ON e.chain_id = %s AND e.seq = h.hold_seq"
            " WHERE h.status = 'active' AND h.expires_us <= %s AND NOT EXISTS ("
            " SELECT 1 FROM coalition_hold_expiry_notice n WHERE n.hold_seq = h.hold_seq)"
            " ORDER BY h.hold_seq LIMIT %s",
            (DEFAULT_CHAIN_ID, horizon_us, HOLDS_PER_SWEEP_MAX),
        ).fetchall()
        events = []
        for hold_seq, amount, expires_us, canonical in rows:
            meta = json.loads(bytes(canonical))["meta"]
            partner = meta.get("partner")
            if not partner:
                continue
            data = {
                "hold": hold_seq,
                "ref": meta.get("ref"),
                "member": meta.get("member"),
                "points": amount,
            }
            events.append(outbox.Event(partner, "hold.expired", expires_us, data))
        if not events:
            return 0
        outbox.record(conn, events)
        # Two sweepers at once: the second's insert waits for the first's commit and then
        # conflicts, rolling its events back with it.
        conn.execute(
            "INSERT INTO coalition_hold_expiry_notice (hold_seq, event_seq)"
            " SELECT unnest(%s::bigint[]), last_seq FROM coalition_event_head",
            ([e.payload["hold"] for e in events],),
        )
    return len(events)

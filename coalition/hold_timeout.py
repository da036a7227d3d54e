"""The hold time-out job: close every hold past its expiry with a void, so the journal
says what became of it and the active holds a member's spending is judged against stay
few.

An expired hold already reserves nothing and cannot be captured (docs/FORMAT.md §6):
this job changes no balance and no availability. Each void is an ordinary ``void`` of
hold H (kind ``hold_timeout``, scope ``coalition``, reference ``hold-timeout:<H>``), so a
rerun, or two runs at once, void each hold once; a hold captured or voided between the
read and the append is refused alone (``hold_not_active``) and left as it is. Each void's
transaction also announces its hold's ``hold.expired`` (``hold_expiry.announce``) unless
the event sweep already did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coalition import hold_expiry
from coalition.context import Coalition, Conn
from ledger.journal import DEFAULT_CHAIN_ID, Appended
from ledger.rejections import Rejection
from ledger.requests import EntryRequest
from ledger.timefmt import format_time_us

SCOPE = "coalition"
KIND = "hold_timeout"
HOLDS_PER_RUN_MAX = 5_000  # the rest wait for the next run
ENTRIES_PER_BATCH_MAX = 500


@dataclass(frozen=True, slots=True)
class TimedOut:
    voided: int  # holds closed by this run
    refused: list[str] = field(default_factory=list)  # holds the ledger refused, and why


def void_expired_holds(co: Coalition, conn: Conn, *, as_of_us: int) -> TimedOut:
    if as_of_us > co.clock_us():
        raise ValueError("holds cannot be timed out as of a moment still to come")
    rows = conn.execute(
        "SELECT h.hold_seq, h.amount, h.expires_us, e.canonical FROM ledger_hold h"
        " JOIN ledger_entry e ON e.chain_id = %s AND e.seq = h.hold_seq"
        " WHERE h.chain_id = e.chain_id AND h.status = 'active' AND h.expires_us <= %s"
        " ORDER BY h.hold_seq LIMIT %s",
        (co.journal.chain_id, as_of_us, HOLDS_PER_RUN_MAX),
    ).fetchall()
    holds = [hold_expiry.ExpiredHold(int(r[0]), int(r[1]), int(r[2]), r[3]) for r in rows]
    voided, refused = 0, []
    for start in range(0, len(holds), ENTRIES_PER_BATCH_MAX):
        batch = holds[start : start + ENTRIES_PER_BATCH_MAX]
        requests = [
            EntryRequest(
                KIND,
                SCOPE,
                f"hold-timeout:{hold.hold_seq}",
                meta={"hold": hold.hold_seq, "expired": format_time_us(hold.expires_us)},
                void_hold_seq=hold.hold_seq,
            )
            for hold in batch
        ]
        # The voids and their holds' hold.expired events commit together: the partner
        # is told exactly when the hold is closed, and a crash between cannot lose it.
        with conn.transaction():
            outcomes = co.journal.append(conn, requests)
            closed = []
            for hold, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, Appended) and not outcome.replayed:
                    closed.append(hold)
                elif isinstance(outcome, Rejection):
                    refused.append(f"hold {hold.hold_seq}: {outcome}")
            hold_expiry.announce(conn, closed)
        voided += len(closed)
    return TimedOut(voided, refused)


def timed_out(conn: Conn, hold_seq: int) -> bool:
    """Whether hold ``hold_seq`` was closed by this job (a capture of it is then refused
    as expired, which it was, rather than as closed)."""
    row = conn.execute(
        "SELECT e.kind FROM ledger_hold h"
        " JOIN ledger_entry e ON e.chain_id = h.chain_id AND e.seq = h.closed_seq"
        " WHERE h.chain_id = %s AND h.hold_seq = %s",
        (DEFAULT_CHAIN_ID, hold_seq),
    ).fetchone()
    return row is not None and row[0] == KIND

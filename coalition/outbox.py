"""The outbox: events written in the transaction of the fact they announce.

``record_entries`` runs in the journal's ``after_append`` (every append path: a plain
append, the API's group committer, the thread committer's pipelined stream), so an event
exists exactly when its entry committed. Settlement runs write theirs with ``record``
in the transaction that moves the run; checkpoints by a trigger (migration 0010).

Each event belongs to the partner whose data it is about (``partner_id``), or to nobody
(NULL: a public fact, a signed checkpoint). Its seq comes from one counter row updated
in the writing transaction, so seqs are given out in commit order, without gaps: a
reader resuming after seq N misses nothing (docs/DESIGN.md, "Events out") — unless N is
below the ``horizon``: the outbox is pruned from its oldest end (``outbox_retention``),
and such a reader is told (``events_since`` answers ``Pruned``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from coalition.accounts import OPERATOR
from ledger.journal import Appended
from ledger.requests import EntryRequest

PAYLOAD_BYTES_MAX = 16384  # as migration 0010's CHECK: an event is a notice, not a report

# Entry kind → event type. Kinds not named here (partners, terms, members, keys) are
# the operator's facts, not a partner's activity, and raise no event.
ENTRY_EVENT_TYPES = {
    "earn": "earn.recorded",
    "bonus": "bonus.recorded",
    "redeem": "redemption.recorded",
    "authorise": "hold.authorised",
    "capture": "hold.captured",
    "void_hold": "hold.voided",
    "refund_earn": "refund.purchase",
    "refund_redemption": "refund.redemption",
}
OTHER_EVENT_TYPES = (
    "hold.expired",  # by a sweep (coalition/hold_expiry.py): no entry announces it
    "points.expired",  # to each issuer whose lots an expiry sweep closed
    "checkpoint.signed",  # public: to every partner that subscribes to it
    "settlement_run.computed",
    "settlement_run.approved",
    "settlement_run.paid",
    "statement.revised",  # a correction's new revision: each party's statement changed
)
EVENT_TYPES = (*ENTRY_EVENT_TYPES.values(), *OTHER_EVENT_TYPES)

Conn = psycopg.Connection[Any]

# What of an entry's metadata a partner is told: its own reference and amounts, never
# the caller's raw input or another partner's figures.
_FIELDS = (
    "ref",
    "member",
    "points",
    "purchase_minor",
    "currency",
    "tier",
    "reason",
    "hold",
    "earn_seq",
    "redemption_seq",
    "refund_minor",
    "debt_points",
)


@dataclass(frozen=True, slots=True)
class Event:
    partner_id: str | None
    event_type: str
    occurred_us: int
    payload: dict[str, Any]


def entry_events(appended: Sequence[tuple[EntryRequest, Appended]]) -> list[Event]:
    events: list[Event] = []
    for request, result in appended:
        meta = request.meta
        base = {"entry_seq": result.seq, "leaf_hash": result.leaf_hash.hex()}
        event_type = ENTRY_EVENT_TYPES.get(request.kind)
        if event_type is not None and meta.get("partner", OPERATOR) != OPERATOR:
            data = base | {k: meta[k] for k in _FIELDS if k in meta}
            events.append(Event(meta["partner"], event_type, result.time_us, data))
        elif request.kind == "expire":
            for issuer, points in sorted(meta.get("points_by_issuer", {}).items()):
                if issuer != OPERATOR:
                    data = base | {"member": meta["member"], "points": points}
                    events.append(Event(issuer, "points.expired", result.time_us, data))
    return events


def record_entries(conn: Conn, appended: list[tuple[EntryRequest, Appended]]) -> None:
    """The journal's after-append hook: the batch's events, in its transaction."""
    record(conn, entry_events(appended))


def record(conn: Conn, events: Sequence[Event]) -> None:
    """Write ``events`` in the caller's transaction, seqs in order, in one statement (no
    round trip to wait for inside a pipelined append). The payloads go as one JSON
    array, encoded once (an encoding per event cost a chunk of 1,000 entries ~4 ms)."""
    if not events:
        return
    # Each payload's bound (PAYLOAD_BYTES_MAX) is the table's CHECK: an event too large
    # fails the statement, and with it the transaction of the facts it announces.
    payloads = json.dumps([e.payload for e in events], separators=(",", ":"))
    conn.execute(
        "WITH head AS (UPDATE coalition_event_head SET last_seq = last_seq + %(n)s"
        " RETURNING last_seq - %(n)s AS first)"
        " INSERT INTO coalition_event (event_seq, partner_id, event_type, occurred_us, payload)"
        " SELECT head.first + e.ord, e.partner, e.type, e.at, e.payload"
        " FROM head, ROWS FROM (unnest(%(partners)b::text[]), unnest(%(types)b::text[]),"
        " unnest(%(ats)b::bigint[]), jsonb_array_elements(%(payloads)s::jsonb))"
        " WITH ORDINALITY AS e(partner, type, at, payload, ord)",
        {
            "n": len(events),
            "partners": [e.partner_id for e in events],
            "types": [e.event_type for e in events],
            "ats": [e.occurred_us for e in events],
            "payloads": payloads,
        },
    )


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    event_id: str
    partner_id: str | None
    event_type: str
    occurred_us: int
    payload: dict[str, Any]


def events_for(
    conn: Conn, partner_id: str, after_seq: int, types: Sequence[str] | None, limit: int
) -> list[StoredEvent]:
    """A partner's events after ``after_seq``, in seq order: its own and the public ones."""
    rows = conn.execute(
        "SELECT event_seq, event_id::text, partner_id, event_type, occurred_us, payload"
        " FROM coalition_event WHERE event_seq > %s"
        " AND (partner_id = %s OR partner_id IS NULL)"
        " AND (%s::text[] IS NULL OR event_type = ANY(%s::text[]))"
        " ORDER BY event_seq LIMIT %s",
        (after_seq, partner_id, types, types, limit),
    ).fetchall()
    return [StoredEvent(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class Pruned:
    """Events after the reader's seq are gone: every event up to ``horizon_seq`` was pruned."""

    horizon_seq: int

    @property
    def oldest_seq(self) -> int:
        """The oldest seq a reader can still get (or the next one written, if none is kept)."""
        return self.horizon_seq + 1


# The oldest kept seq less one; with none kept, the last seq given out (all of them gone).
_HORIZON = (
    "coalesce((SELECT min(event_seq) FROM coalition_event) - 1,"
    " (SELECT last_seq FROM coalition_event_head))"
)


def horizon(conn: Conn) -> int:
    """Every event up to this seq has been pruned (0: none ever was)."""
    row = conn.execute(f"SELECT {_HORIZON}").fetchone()
    assert row is not None
    return int(row[0])


def events_since(
    conn: Conn, partner_id: str, after_seq: int, types: Sequence[str] | None, limit: int
) -> list[StoredEvent] | Pruned:
    """As ``events_for``, unless events after ``after_seq`` were pruned: then ``Pruned``.
    One statement, so the horizon and the events are of one snapshot (read apart, a prune
    between them would let a gap through)."""
    rows = conn.execute(
        f"SELECT h.horizon, e.* FROM (SELECT {_HORIZON} AS horizon) h LEFT JOIN LATERAL ("
        " SELECT event_seq, event_id::text, partner_id, event_type, occurred_us, payload"
        " FROM coalition_event WHERE event_seq > %s"
        " AND (partner_id = %s OR partner_id IS NULL)"
        " AND (%s::text[] IS NULL OR event_type = ANY(%s::text[]))"
        " ORDER BY event_seq LIMIT %s) e ON true ORDER BY e.event_seq",
        (after_seq, partner_id, types, types, limit),
    ).fetchall()
    assert rows, "the horizon row is always there"
    if int(rows[0][0]) > after_seq:
        return Pruned(int(rows[0][0]))
    return [StoredEvent(*row[1:]) for row in rows if row[1] is not None]


def last_seq(conn: Conn) -> int:
    row = conn.execute("SELECT last_seq FROM coalition_event_head").fetchone()
    assert row is not None, "migration 0010 makes the head"
    return int(row[0])

"""Outbox retention: the scheduler's ``outbox`` job deletes events older than the
retention, so ``coalition_event`` is a bounded queue, not a growing history.

What goes is always a **prefix of seqs**, never a hole: the run walks up from the oldest
kept event and stops at the first one still inside the retention (times by seq are
nearly ordered; a younger one among old ones holds the rest back until it is old too).
So the **horizon** — the oldest kept seq less one (``outbox.horizon``) — says exactly
what is gone, and every reader is judged against it:

- a webhook subscription whose cursor is below the new horizon is locked first (the
  delivery worker's advisory lock; one being delivered to right now holds the horizon
  back to its cursor for this run). If none of the pruned events were its own (partner,
  types), its cursor moves up to the horizon and nothing changes for it. If some were,
  it is marked ``behind``: nothing more is sent, ``last_error`` and ``pruned_*`` name the
  seqs it lost, until its partner reactivates it (``webhooks.reactivate``). Never a
  silent skip;
- a GraphQL subscription resuming below the horizon is refused with ``EVENTS_PRUNED``,
  naming the oldest seq still there (``coalition/api/event_stream.py``).

Bounded: at most ``rows_max`` events a run, in transactions of ``batch_rows``; a larger
backlog takes more runs (the job's detail says so). The delivery log's attempts older
than the retention go too (``prune_attempts``, as bounded): it is a log, read newest
first, and nothing is judged against it.
"""

from __future__ import annotations

from dataclasses import dataclass

from coalition import outbox
from coalition.context import Conn
from coalition.webhooks import SUBSCRIPTION_LOCK

RETENTION_DAYS_DEFAULT = 30
ROWS_PER_RUN_MAX = 50_000
BATCH_ROWS = 5_000
DAY_US = 86_400 * 1_000_000


@dataclass(frozen=True, slots=True)
class PruneResult:
    deleted: int
    horizon_seq: int  # every event up to it is gone
    behind: tuple[str, ...]  # subscriptions marked behind (events of theirs pruned)
    more: bool  # old events remain: the run stopped at its row bound


def prune(
    conn: Conn,
    *,
    now_us: int,
    retention_days: int,
    rows_max: int = ROWS_PER_RUN_MAX,
    batch_rows: int = BATCH_ROWS,
) -> PruneResult:
    """Delete events that occurred more than ``retention_days`` before ``now_us``."""
    assert retention_days >= 1 and rows_max >= 1 and batch_rows >= 1
    cutoff_us = now_us - retention_days * DAY_US
    deleted, behind, more = 0, set(), False
    while deleted < rows_max:
        with conn.transaction():
            done, marked, full = _batch(conn, cutoff_us, min(batch_rows, rows_max - deleted))
        deleted += done
        behind.update(marked)
        more = full
        if not done or not full:
            break
    return PruneResult(deleted, outbox.horizon(conn), tuple(sorted(behind)), more)


def prune_attempts(
    conn: Conn, *, now_us: int, retention_days: int, rows_max: int = ROWS_PER_RUN_MAX
) -> int:
    """Delete delivery attempts made more than ``retention_days`` before ``now_us``, the
    oldest first, at most ``rows_max``; how many."""
    (count,) = conn.execute(
        "WITH gone AS (DELETE FROM coalition_webhook_delivery WHERE delivery_id IN ("
        " SELECT delivery_id FROM coalition_webhook_delivery WHERE attempted_at_us < %s"
        " ORDER BY delivery_id LIMIT %s) RETURNING 1) SELECT count(*) FROM gone",
        (now_us - retention_days * DAY_US, rows_max),
    ).fetchone() or (0,)
    return int(count)


def _batch(conn: Conn, cutoff_us: int, limit: int) -> tuple[int, list[str], bool]:
    """One transaction: how many events it deleted, the subscriptions it marked behind,
    and whether every event it looked at was old (there may be more)."""
    start = outbox.horizon(conn)
    rows = conn.execute(
        "SELECT event_seq, occurred_us FROM coalition_event WHERE event_seq > %s"
        " ORDER BY event_seq LIMIT %s",
        (start, limit),
    ).fetchall()
    target = start
    for seq, occurred_us in rows:
        if occurred_us >= cutoff_us:
            break
        target = int(seq)
    full = bool(rows) and target == int(rows[-1][0]) and len(rows) == limit
    lagging = conn.execute(
        "SELECT subscription_id, after_seq FROM coalition_webhook_subscription"
        " WHERE status <> 'deleted' AND after_seq < %s ORDER BY subscription_id",
        (target,),
    ).fetchall()
    locked = []
    for subscription_id, after_seq in lagging:
        (got,) = conn.execute(
            "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))",
            (SUBSCRIPTION_LOCK, subscription_id),
        ).fetchone() or (False,)
        if got:
            locked.append(subscription_id)
        else:  # being delivered to: its cursor is moving, judge it next run
            target = max(start, min(target, int(after_seq)))
            full = False
    if target <= start:
        return 0, [], False
    marked = [s for s in locked if _judge(conn, s, start, target)]
    (count,) = conn.execute(
        "WITH gone AS (DELETE FROM coalition_event WHERE event_seq > %s AND event_seq <= %s"
        " RETURNING 1) SELECT count(*) FROM gone",
        (start, target),
    ).fetchone() or (0,)
    return int(count), marked, full


def _judge(conn: Conn, subscription_id: str, start: int, target: int) -> bool:
    """Before events (start, target] go: move a subscription that loses none of its own
    up to ``target``, or mark it behind with what it loses. True if marked."""
    row = conn.execute(
        "SELECT partner_id, event_types, status, after_seq FROM coalition_webhook_subscription"
        " WHERE subscription_id = %s FOR UPDATE",
        (subscription_id,),
    ).fetchone()
    assert row is not None, "subscriptions are never deleted, only marked"
    partner_id, types, status, after_seq = row
    if status == "deleted" or after_seq >= target:
        return False
    first, last, lost = conn.execute(
        "SELECT min(event_seq), max(event_seq), count(*) FROM coalition_event"
        " WHERE event_seq > %s AND event_seq <= %s"
        " AND (partner_id = %s OR partner_id IS NULL) AND event_type = ANY(%s)",
        (max(after_seq, start), target, partner_id, types),
    ).fetchone() or (None, None, 0)
    if not lost:
        if status != "behind":  # a behind one keeps its cursor: reactivation moves it
            conn.execute(
                "UPDATE coalition_webhook_subscription SET after_seq = %s"
                " WHERE subscription_id = %s",
                (target, subscription_id),
            )
        return False
    conn.execute(
        "UPDATE coalition_webhook_subscription SET"
        " pruned_first_seq = CASE WHEN status = 'behind'"
        " THEN coalesce(pruned_first_seq, %(first)s) ELSE %(first)s END,"
        " pruned_events = CASE WHEN status = 'behind' THEN pruned_events ELSE 0 END"
        " + %(lost)s, pruned_last_seq = %(last)s, status = 'behind', attempts = 0,"
        " next_attempt_us = 0, last_error = %(error)s WHERE subscription_id = %(id)s",
        {
            "first": first,
            "last": last,
            "lost": lost,
            "id": subscription_id,
            "error": f"behind: its events up to seq {last} were pruned (retention) before"
            f" delivery; reactivate to resume after seq {last}",
        },
    )
    return True

"""The expiry job: points past their expiry move to breakage, their issuer preserved.

One entry per member account, naming the expired lots it empties (``expired`` takes),
so the issuer of every expired point stays on record. Idempotent: a lot once emptied is
not taken again, and a run for the same date over the same state uses the same
references. It can be run for any date (not before the journal's last entry).
"""

from __future__ import annotations

from collections.abc import Callable

from coalition import accounts
from coalition.context import Coalition, Conn
from coalition.outcomes import Expired
from ledger import reads
from ledger.journal import Appended
from ledger.rejections import Rejection
from ledger.requests import EntryRequest, LotTake, PostingRequest
from ledger.timefmt import format_time_us
from ledger.units import POINTS_UNIT

ENTRIES_PER_BATCH_MAX = 500
Progress = Callable[[int, int], None]


def expire_points(
    co: Coalition, conn: Conn, *, as_of_us: int, progress: Progress | None = None
) -> Expired:
    if as_of_us > co.clock_us():
        raise ValueError("points cannot be expired as of a date still to come")
    rows = conn.execute(
        "SELECT l.account, l.lot_id, l.origin, l.remaining FROM ledger_lot l"
        " WHERE l.chain_id = %s AND l.remaining > 0 AND l.expires_us IS NOT NULL"
        " AND l.expires_us <= %s AND l.account LIKE 'member:%%'"
        " ORDER BY l.account, l.opened_seq, l.posting_index",
        (co.journal.chain_id, as_of_us),
    ).fetchall()
    by_account: dict[str, list[tuple[str, str, int]]] = {}
    for account, lot_id, origin, remaining in rows:
        by_account.setdefault(account, []).append((lot_id, origin, remaining))
    # The journal's size when the lots were read makes the reference: a rerun over the same
    # state replays, a rerun after points came back to an expired lot sweeps them too.
    tree_size = reads.head(conn).tree_size
    requests = [_expiry(account, lots, as_of_us, tree_size) for account, lots in by_account.items()]
    result = Expired(0, 0, {})
    for start in range(0, len(requests), ENTRIES_PER_BATCH_MAX):
        batch = requests[start : start + ENTRIES_PER_BATCH_MAX]
        for request, outcome in zip(batch, co.journal.append(conn, batch), strict=True):
            if isinstance(outcome, Appended) and not outcome.replayed:
                result = _add(result, request)
            elif isinstance(outcome, Rejection):
                # A lot spent between our read and the append is retried next run; say so.
                result.refused.append(f"{request.meta['member']}: {outcome}")
        if progress is not None:
            progress(min(start + ENTRIES_PER_BATCH_MAX, len(requests)), len(requests))
    return result


def _expiry(
    account: str, lots: list[tuple[str, str, int]], as_of_us: int, tree_size: int
) -> EntryRequest:
    total = sum(remaining for _, _, remaining in lots)
    by_issuer: dict[str, int] = {}
    for _, origin, remaining in lots:
        by_issuer[origin] = by_issuer.get(origin, 0) + remaining
    key = f"expire:{account}:{format_time_us(as_of_us)}@{tree_size}"
    return EntryRequest(
        "expire",
        "coalition",
        key,
        meta={
            "member": account.removeprefix("member:"),
            "as_of": format_time_us(as_of_us),
            "points": total,
            "points_by_issuer": by_issuer,
        },
        postings=(
            PostingRequest(
                account,
                POINTS_UNIT,
                -total,
                take_expired=True,
                # Expiring is not spending: a member in debt (a clawback of points already
                # spent) still loses expired points rather than blocking the sweep.
                allow_debt=True,
                lots=tuple(LotTake(lot_id, n) for lot_id, _, n in lots),
            ),
            PostingRequest(accounts.BREAKAGE, POINTS_UNIT, total),
        ),
    )


def _add(result: Expired, request: EntryRequest) -> Expired:
    by_issuer = dict(result.points_by_issuer)
    for issuer, points in request.meta["points_by_issuer"].items():
        by_issuer[issuer] = by_issuer.get(issuer, 0) + points
    return Expired(
        result.entries + 1, result.points + request.meta["points"], by_issuer, result.refused
    )

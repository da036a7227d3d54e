"""Turn a caller's request into a journal entry: place, time and the lots it consumes.

The ledger, not the caller, picks the lots a debit of a lot-tracked account takes when the
caller names none: first-expiring-first, never-expiring last, ties oldest first. The
choice is written into the entry so that a replay needs no policy, only the rules.
"""

from __future__ import annotations

from typing import Any

from ledger.requests import EntryRequest, PostingRequest
from ledger.rules import FORMAT_VERSION
from ledger.state import State
from ledger.timefmt import format_time_us


def build_entry(request: EntryRequest, state: State, time_us: int) -> dict[str, Any]:
    """The entry as it would be appended next; ``ledger.rules`` then judges it."""
    seq = state.tree_size
    entry: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "seq": seq,
        "prev": state.prev_leaf_hash_hex,
        "time": format_time_us(time_us),
        "kind": request.kind,
        "ref": {"scope": request.ref_scope, "key": request.ref_key},
        "meta": request.meta,
        "postings": [],
    }
    if request.open_accounts:
        entry["open"] = [spec.to_json() for spec in request.open_accounts]
    # Looked up per posting: a batch may have loaded many accounts (no per-entry copy).
    opened = {spec.account: spec.lot_tracked for spec in request.open_accounts}
    taken: dict[str, int] = {}  # lot_id -> taken by earlier postings of this entry
    for index, posting in enumerate(request.postings):
        out = {"account": posting.account, "unit": posting.unit, "amount": posting.amount}
        known = state.accounts.get(posting.account)
        if known.lot_tracked if known is not None else opened.get(posting.account, False):
            _add_lots(out, posting, index, state, time_us, taken)
        else:
            _pass_lot_fields(out, posting)
        entry["postings"].append(out)
    if request.hold is not None:
        hold = request.hold
        entry["hold"] = {
            "account": hold.account,
            "unit": hold.unit,
            "amount": hold.amount,
            "expires": _format_or_none(hold.expires_us),
        }
    if request.capture_hold_seq is not None:
        entry["capture"] = {"hold": request.capture_hold_seq, "amount": request.capture_amount}
    if request.void_hold_seq is not None:
        entry["void"] = {"hold": request.void_hold_seq}
    if request.corrects_seq is not None:
        entry["corrects"] = request.corrects_seq
    return entry


def _format_or_none(time_us: int | None) -> str | None:
    if time_us is None:
        return None
    try:
        return format_time_us(time_us)
    except (AssertionError, OverflowError, ValueError):
        return f"invalid:{time_us}"  # the rules reject it with a typed reason


def _add_lots(
    out: dict[str, Any],
    posting: PostingRequest,
    index: int,
    state: State,
    time_us: int,
    taken: dict[str, int],
) -> None:
    if posting.lots is not None:
        out["lots"] = [{"lot": t.lot_id, "amount": t.amount} for t in posting.lots]
    if posting.take_expired:
        out["expired"] = True
    if posting.allow_debt:
        out["debt"] = True
    if posting.amount > 0:
        if posting.lots is None:
            out["lot"] = {
                "origin": posting.lot_origin,
                "expires": _format_or_none(posting.lot_expires_us),
                "amount": _opened_after_debt(posting, state),
            }
        return
    if posting.lots is not None:
        return
    wanted = -posting.amount
    chosen: list[dict[str, Any]] = []
    lots = sorted(state.account_lots(posting.account), key=lambda lot: lot.fefo_key())
    for lot in lots:
        if wanted == 0:
            break
        available = lot.remaining - taken.get(lot.lot_id, 0)
        if available <= 0 or lot.is_expired(time_us) != posting.take_expired:
            continue
        take = min(available, wanted)
        chosen.append({"lot": lot.lot_id, "amount": take})
        taken[lot.lot_id] = taken.get(lot.lot_id, 0) + take
        wanted -= take
    out["lots"] = chosen


def _pass_lot_fields(out: dict[str, Any], posting: PostingRequest) -> None:
    """Lot fields asked of an account without lots go into the entry as asked, so that
    the rules refuse it with a reason rather than the writer dropping them unseen."""
    if posting.lots is not None:
        out["lots"] = [{"lot": t.lot_id, "amount": t.amount} for t in posting.lots]
    if posting.lot_origin is not None or posting.lot_expires_us is not None:
        out["lot"] = {
            "origin": posting.lot_origin,
            "expires": _format_or_none(posting.lot_expires_us),
            "amount": 0,
        }
    if posting.take_expired:
        out["expired"] = True
    if posting.allow_debt:
        out["debt"] = True


def _opened_after_debt(posting: PostingRequest, state: State) -> int:
    # Same arithmetic as ledger.rules: a clawback debt is repaid before a new lot opens.
    # (Postings earlier in the same entry on the same account are rare; the rules recheck.)
    debt = max(0, state.lots_remaining(posting.account) - state.balances.get(posting.account, 0))
    return posting.amount - min(posting.amount, debt)

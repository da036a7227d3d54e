"""An entry the lean checks did not accept is judged by the reference, ``ledger.rules``.

So the failure is named exactly as ``ledger.verify.Replay.feed`` names it (seq, check,
expected, actual), by the same code. The reference runs on a ``State`` holding only what
the entry can reach — the accounts it names with their balances, lots and active holds,
the lots and holds it names, and the bounds of the entry it corrects — which is all that
``apply_entry`` reads, built from the lean tables before the entry (the lean checks
undid whatever they had changed). If the reference accepts the entry (the lean checks
are stricter only about lines with bytes ≥ 0xEE, whose key order only the reference
judges), its effects are copied back into the lean tables and the replay goes on.
"""

from __future__ import annotations

import json
from typing import Any

from ledger._lean_rules import EntryBytes
from ledger._lean_state import (
    ACCOUNT,
    ACTIVE,
    CAPTURED,
    EXPIRES,
    H_ACCOUNT,
    H_AMOUNT,
    H_EXPIRES,
    H_STATUS,
    LOT_ID,
    LOT_TRACKED,
    NEVER_US,
    OPENED,
    OVERDRAFT,
    REMAINING,
    VOIDED,
    LeanState,
)
from ledger.canonical import NotCanonicalizable, parse_canonical
from ledger.rejections import Rejection
from ledger.rules import Effects, apply_entry
from ledger.state import (
    HOLD_ACTIVE,
    HOLD_CAPTURED,
    HOLD_VOIDED,
    Account,
    Corrected,
    Hold,
    Lot,
    State,
    moves_of_entry,
)
from ledger.verify import VerificationFailed

_STATUS_NAMES = {ACTIVE: HOLD_ACTIVE, CAPTURED: HOLD_CAPTURED, VOIDED: HOLD_VOIDED}
_STATUS_CODES = {name: code for code, name in _STATUS_NAMES.items()}


def judge_line(line: bytes, seq: int, st: LeanState, entry_bytes: EntryBytes) -> None:
    """Judge one line (with its ``\\n``) as the reference does; raise its failure, or
    apply the accepted entry to ``st`` (all but the chain position, the caller's)."""
    if not line.endswith(b"\n"):
        raise VerificationFailed(seq, "line_end", "\\n", line[-20:])
    canonical = line[:-1]
    try:
        entry = parse_canonical(canonical)
    except NotCanonicalizable as exc:
        raise VerificationFailed(seq, "canonical", "RFC 8785 bytes", str(exc)) from None
    if type(entry) is not dict:
        raise VerificationFailed(seq, "json", "an object", type(entry).__name__)
    if entry.get("seq") != seq:
        raise VerificationFailed(seq, "seq", seq, entry.get("seq"))
    if entry.get("prev") != st.prev_hex:
        raise VerificationFailed(seq, "prev_link", st.prev_hex, entry.get("prev"))
    view = _view(entry, seq, st, entry_bytes)
    outcome = apply_entry(entry, view)
    if isinstance(outcome, Rejection):
        raise VerificationFailed(seq, f"rule:{outcome.code.value}", "accepted", outcome.detail)
    _absorb(outcome, view, st)


def _strings(values: Any) -> set[str]:
    return {v for v in values if type(v) is str}


def _named(entry: dict[str, Any]) -> tuple[set[str], set[str], set[int]]:
    """Accounts, lot ids and hold seqs the entry names (whatever their shape)."""
    accounts: set[str] = set()
    lot_ids: set[str] = set()
    holds: set[int] = set()
    for key in ("open", "postings"):
        items = entry.get(key)
        if type(items) is list:
            accounts |= _strings(i.get("account") for i in items if type(i) is dict)
    postings = entry.get("postings")
    for p in postings if type(postings) is list else ():
        if type(p) is dict and type(p.get("lots")) is list:
            lot_ids |= _strings(i.get("lot") for i in p["lots"] if type(i) is dict)
    for key in ("hold", "capture", "void"):
        part = entry.get(key)
        if type(part) is dict:
            accounts |= _strings([part.get("account")])
            if type(part.get("hold")) is int:
                holds.add(part["hold"])
    return accounts, lot_ids, holds


def _view(entry: dict[str, Any], seq: int, st: LeanState, entry_bytes: EntryBytes) -> State:
    view = State(tree_size=seq, prev_leaf_hash_hex=st.prev_hex, last_time_us=st.last_time_us)
    view.moves_of = lambda s: moves_of_entry(json.loads(entry_bytes(s))["postings"])
    accounts, lot_ids, hold_seqs = _named(entry)
    for hold_seq in hold_seqs:
        if hold_seq in st.holds:
            view.add_hold(_hold(hold_seq, st))
    for name in accounts:
        if name not in st.unit:
            continue
        flags = st.flags[name]
        view.accounts[name] = Account(
            name, st.unit[name], bool(flags & OVERDRAFT), bool(flags & LOT_TRACKED), 0
        )
        view.balances[name] = st.balance[name]
        for hold_seq in st.held_of.get(name, {}):
            view.add_hold(_hold(hold_seq, st))
        lot_ids.update(lot[LOT_ID] for lot in st.lots_of.get(name, ()))
    for lot_id in lot_ids:
        lot = st.lots.get(lot_id)
        if lot is not None:
            opened_seq, index = (int(part) for part in lot_id.split(":"))
            expires = None if lot[EXPIRES] == NEVER_US else lot[EXPIRES]
            view.add_lot(
                Lot(
                    lot_id,
                    lot[ACCOUNT],
                    "",
                    expires,
                    opened_seq,
                    index,
                    lot[OPENED],
                    lot[REMAINING],
                )
            )
    corrects = entry.get("corrects")
    if type(corrects) is int and corrects in st.corrected:
        moved, given, taken = st.corrected[corrects]
        view.corrected[corrects] = Corrected(moved, dict(given), dict(taken))
    return view


def _hold(hold_seq: int, st: LeanState) -> Hold:
    hold = st.holds[hold_seq]
    account = hold[H_ACCOUNT]
    status = _STATUS_NAMES[hold[H_STATUS]]
    return Hold(
        hold_seq, account, st.unit.get(account, ""), hold[H_AMOUNT], hold[H_EXPIRES], status
    )


def _absorb(fx: Effects, view: State, st: LeanState) -> None:
    for account in fx.accounts_opened:
        st.unit[account.name] = account.unit
        st.flags[account.name] = (OVERDRAFT if account.overdraft else 0) | (
            LOT_TRACKED if account.lot_tracked else 0
        )
        st.balance[account.name] = 0
    for posting in fx.postings:
        st.balance[posting.account] = posting.balance_after
    for lot_id in fx.lots_changed:
        st.lots[lot_id][REMAINING] = view.lots[lot_id].remaining
    for lot in fx.lots_opened:
        expires = NEVER_US if lot.expires_us is None else lot.expires_us
        st.add_lot(lot.lot_id, [lot.remaining, lot.amount_opened, expires, lot.account, lot.lot_id])
    if fx.hold_opened is not None:
        h = fx.hold_opened
        st.add_hold(h.hold_seq, [h.amount, h.expires_us, h.account, ACTIVE])
    if fx.hold_closed is not None:
        st.close_hold(fx.hold_closed.hold_seq, _STATUS_CODES[fx.hold_closed.status])
    if fx.corrected is not None:
        corrected_seq, bounds = fx.corrected
        st.corrected[corrected_seq] = (bounds.moved, bounds.given_back, bounds.taken_back)
    st.last_time_us = fx.time_us

"""The checks of an entry that read the state, and the entry's changes to it.

``apply_state`` runs after ``ledger._lean_shape.check_shape`` has passed, so it takes
types and shapes as given. It mirrors ``ledger.rules`` check for check (docs/FORMAT.md
§3–§6, §3a): accounts opened, the capture's hold, each posting (account, unit, lots
taken or restored, debt, the lot a credit opens, the running balance), the capture's
net, availability, the hold placed, the hold voided, the bounds on a correction. The
order differs only in which failure would be named first, and naming is the reference's
job: any failure raises and the entry is judged again by ``ledger.rules``.

Partitioned by account (``owned``): every rule above reads and writes the state of one
account (its properties, balance, lots and active holds) or of one (corrected entry,
account) pair, or is about one hold, whose table every partition keeps whole (a hold's
fate is written in the entry that places, captures or voids it). So a worker that
applies only the postings, opens and holds of the accounts it owns, for every entry,
keeps those accounts' state exactly as the whole replay would, and an entry passes the
whole replay exactly when it passes every partition and ``check_shape``. ``owned`` is
None when one worker owns every account.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from ledger._lean_shape import Refer
from ledger._lean_state import (
    ACCOUNT,
    ACTIVE,
    CAPTURED,
    EXPIRES,
    H_ACCOUNT,
    H_AMOUNT,
    H_EXPIRES,
    H_STATUS,
    LOT_TRACKED,
    NEVER_US,
    OPENED,
    OVERDRAFT,
    REMAINING,
    VOIDED,
    Bounds,
    LeanState,
)
from ledger.state import moves_of_entry
from ledger.units import AMOUNT_MAX

EntryBytes = Callable[[int], bytes]
Owned = dict[str, bool]  # account name → owned by this worker (ledger._lean_parallel)
_NOT_LOTS: Final = OVERDRAFT  # flags of an overdraft account without lots: never checked


def apply_state(
    e: dict[str, Any],
    seq: int,
    time_us: int,
    st: LeanState,
    entry_bytes: EntryBytes,
    owned: Owned | None = None,
) -> None:
    """Check ``e`` against the state and apply it; on any failure raise (state undone
    by the caller with ``st.undo()``)."""
    unit_of, flags_of, balance = st.unit, st.flags, st.balance
    if "open" in e:
        _open(e["open"], st, owned)
    cap_seq, cap_account, cap_amount, cap_net = -1, None, 0, 0
    if "capture" in e:
        capture = e["capture"]
        cap_seq, cap_amount = capture["hold"], capture["amount"]
        hold = st.holds[cap_seq]  # KeyError: hold_unknown
        if hold[H_STATUS] != ACTIVE or hold[H_EXPIRES] <= time_us or cap_amount > hold[H_AMOUNT]:
            raise Refer
        cap_account = hold[H_ACCOUNT]
        if owned is not None and not owned[cap_account]:
            cap_account = None
    debited = st.debited  # scratch lists of the state, empty between entries
    in_debt = st.in_debt
    new_lots = st.new_lots
    undo_balance = st.undo_balance
    for index, p in enumerate(e["postings"]):
        name = p["account"]
        if owned is not None and not owned[name]:
            continue
        if p["unit"] != unit_of[name]:  # KeyError: unknown_account
            raise Refer
        amount = p["amount"]
        flags = flags_of[name]
        if flags & LOT_TRACKED:
            if amount > 0:
                _lot_credit(p, seq, index, amount, name, st, new_lots)
            elif _lot_debit(p, -amount, name, flags, time_us, st):
                in_debt.append(name)
        elif len(p) != 3:
            raise Refer  # lot fields on an account without lots
        before = balance[name]
        after = before + amount
        if not -AMOUNT_MAX <= after <= AMOUNT_MAX:
            raise Refer
        undo_balance.append(name)
        undo_balance.append(before)
        balance[name] = after
        if amount < 0:
            debited.append(name)
        if name == cap_account:
            cap_net += amount
    if cap_account is not None and cap_net != -cap_amount:
        raise Refer
    for name in debited:
        if name not in in_debt:
            _available(name, time_us, st, cap_seq, 0)
    if debited:
        debited.clear()
    hold_spec = e.get("hold")
    if hold_spec is not None:
        name = hold_spec["account"]
        if owned is None or owned[name]:
            if hold_spec["unit"] != unit_of[name]:
                raise Refer
            _available(name, time_us, st, -1, hold_spec["amount"])
    void_seq = -1
    if "void" in e:
        void_seq = e["void"]["hold"]
        if st.holds[void_seq][H_STATUS] != ACTIVE:
            raise Refer
    bounds = None
    if "corrects" in e:
        bounds = _bounded(e["corrects"], e["postings"], st, entry_bytes, owned)
    # Every rule passed: the entry's changes that were held back.
    if new_lots:
        for lot_id, lot in new_lots:
            st.add_lot(lot_id, lot)
        new_lots.clear()
    if in_debt:
        in_debt.clear()
    if hold_spec is not None:
        expires_us = st.time_us(hold_spec["expires"])
        st.add_hold(seq, [hold_spec["amount"], expires_us, hold_spec["account"], ACTIVE])
    if cap_seq >= 0:
        st.close_hold(cap_seq, CAPTURED)
    if void_seq >= 0:
        st.close_hold(void_seq, VOIDED)
    if bounds is not None:
        st.corrected[e["corrects"]] = bounds
    st.last_time_us = time_us


def _open(opens: list[dict[str, Any]], st: LeanState, owned: Owned | None) -> None:
    for spec in opens:
        name = spec["account"]
        if owned is not None and not owned[name]:
            continue
        flags = (OVERDRAFT if spec["overdraft"] else 0) | (LOT_TRACKED if spec["lots"] else 0)
        unit = st.unit.get(name)
        if unit is not None:
            if unit != spec["unit"] or st.flags[name] != flags:
                raise Refer  # account_exists
            continue  # the same account again: a no-op
        st.unit[name] = spec["unit"]
        st.flags[name] = flags
        st.balance[name] = 0
        st.undo_open.append(name)


def _lot_credit(
    p: dict[str, Any],
    seq: int,
    index: int,
    amount: int,
    name: str,
    st: LeanState,
    new_lots: list[Any],
) -> None:
    if "expired" in p or "debt" in p:
        raise Refer
    if "lots" in p:  # a restore
        if "lot" in p or not p["lots"]:
            raise Refer
        restored = 0
        undo_lot = st.undo_lot
        for item in p["lots"]:
            lot = st.lots[item["lot"]]  # KeyError: lot_unknown
            take = item["amount"]
            after = lot[REMAINING] + take
            if lot[ACCOUNT] != name or after > lot[OPENED]:
                raise Refer
            undo_lot.append(lot)
            undo_lot.append(lot[REMAINING])
            lot[REMAINING] = after
            restored += take
        if restored != amount:
            raise Refer
        return
    spec = p["lot"]
    opened = amount
    if st.flags[name] & OVERDRAFT:
        # Debt is what lots hold beyond the balance; lots opened by this entry do not
        # count (they are added after every rule has passed). Without overdraft there
        # is none: each accepted posting moves the balance and the lots' sum alike (a
        # debit's lots must cover it, a credit opens or restores exactly itself), and
        # both start at 0.
        remaining = 0
        for lot in st.lots_of.get(name, ()):
            remaining += lot[REMAINING]
        debt = remaining - st.balance[name]
        if debt > 0:
            opened = amount - min(amount, debt)
    if spec["amount"] != opened:
        raise Refer
    if opened:
        expires = spec["expires"]
        expires_us = NEVER_US if expires is None else st.time_us(expires)
        lot_id = f"{seq}:{index}"
        new_lots.append((lot_id, [opened, opened, expires_us, name, lot_id]))


def _lot_debit(
    p: dict[str, Any], amount: int, name: str, flags: int, time_us: int, st: LeanState
) -> bool:
    """Take the named lots; True when the debit may leave the account in debt."""
    if "lot" in p:
        raise Refer
    may_owe = p.get("debt", False)
    if may_owe and not flags & OVERDRAFT:
        raise Refer
    take_expired = p.get("expired", False)
    taken = 0
    undo_lot = st.undo_lot
    for item in p["lots"]:  # KeyError: a lot debit names its lots
        lot = st.lots[item["lot"]]
        take = item["amount"]
        after = lot[REMAINING] - take
        if lot[ACCOUNT] != name or (lot[EXPIRES] <= time_us) is not take_expired or after < 0:
            raise Refer
        undo_lot.append(lot)
        undo_lot.append(lot[REMAINING])
        lot[REMAINING] = after
        taken += take
    if taken > amount or (taken < amount and not may_owe):
        raise Refer
    return bool(may_owe)


def _available(name: str, time_us: int, st: LeanState, excluded: int, extra: int) -> None:
    flags = st.flags[name]
    if flags == _NOT_LOTS:
        return
    held = extra
    active = st.held_of.get(name)
    if active:
        for hold_seq, hold in active.items():
            if hold[H_EXPIRES] > time_us and hold_seq != excluded:
                held += hold[H_AMOUNT]
    if st.balance[name] < held:
        raise Refer
    if flags & LOT_TRACKED and held:  # lots never hold less than 0: held 0 always fits
        spendable = 0
        for lot in st.lots_of.get(name, ()):
            if lot[EXPIRES] > time_us:
                spendable += lot[REMAINING]
        if spendable < held:
            raise Refer


def _bounded(
    corrected_seq: int,
    postings: list[dict[str, Any]],
    st: LeanState,
    entry_bytes: EntryBytes,
    owned: Owned | None,
) -> Bounds:
    """§3a: on each account the corrected entry moved, its corrections together give
    back at most what it took and take back at most what it gave."""
    before = st.corrected.get(corrected_seq)
    if before is None:  # the first correction of it: read what it moved, once
        moved = moves_of_entry(json.loads(entry_bytes(corrected_seq))["postings"])
        before = (moved, {}, {})
    moved, given, taken = before[0], dict(before[1]), dict(before[2])
    here: dict[str, int] = {}
    for p in postings:
        name = p["account"]
        if owned is None or owned[name]:
            here[name] = here.get(name, 0) + p["amount"]
    for name, net in here.items():
        original = moved.get(name)
        if original is None or net == 0:
            continue
        if net > 0:
            total = given.get(name, 0) + net
            if total > max(0, -original):
                raise Refer
            given[name] = total
        else:
            total = taken.get(name, 0) - net
            if total > max(0, original):
                raise Refer
            taken[name] = total
    return moved, given, taken

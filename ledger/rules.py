"""The rules every journal entry obeys, checked on the write path and again in verification.

``apply_entry`` takes an entry in its canonical JSON form (as built by ``ledger.build``
or parsed from an export) and the state before it. It either returns the entry's
effects, having applied them to the state, or a ``Rejection`` and leaves the state as it
was. Because the write path and the verifier share this one function, an auditor's
replay checks exactly what the writer enforced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ledger.rejections import Rejection
from ledger.rejections import RejectionCode as Code
from ledger.state import HOLD_CAPTURED, HOLD_VOIDED, Account, Corrected, Hold, Lot, State
from ledger.timefmt import parse_time_us
from ledger.units import AMOUNT_MAX, amount_in_range, is_valid_unit

FORMAT_VERSION = 1
POSTINGS_PER_ENTRY_MAX = 64
OPENS_PER_ENTRY_MAX = 16
LOTS_PER_POSTING_MAX = 1000
NAME_LENGTH_MAX = 128
KIND_LENGTH_MAX = 64

_NAME = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces


@dataclass(slots=True)
class PostingEffect:
    posting_index: int
    account: str
    unit: str
    amount: int
    balance_after: int


@dataclass(slots=True)
class Effects:
    seq: int
    time_us: int
    accounts_opened: list[Account] = field(default_factory=list)
    postings: list[PostingEffect] = field(default_factory=list)
    lots_opened: list[Lot] = field(default_factory=list)
    lots_changed: set[str] = field(default_factory=set)
    hold_opened: Hold | None = None
    hold_closed: Hold | None = None
    corrected: tuple[int, Corrected] | None = None  # the corrected entry, bounds after this one


class _Reject(Exception):
    def __init__(self, code: Code, detail: str) -> None:
        self.rejection = Rejection(code, detail)


def _fail(code: Code, detail: str) -> _Reject:
    return _Reject(code, detail)


def apply_entry(entry: Any, state: State) -> Effects | Rejection:
    try:
        return _apply(entry, state)
    except _Reject as rejected:
        return rejected.rejection


def _int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise _fail(Code.INVALID_ENTRY, f"{what} must be an integer")
    return value


def _str(value: Any, what: str, length_max: int = NAME_LENGTH_MAX) -> str:
    if type(value) is not str or not value or len(value) > length_max:
        raise _fail(Code.INVALID_ENTRY, f"{what} must be a non-empty string of ≤{length_max}")
    return value


def _name(value: Any, what: str) -> str:
    if type(value) is not str or not _NAME.fullmatch(value):
        raise _fail(Code.INVALID_ENTRY, f"{what} must be 1–128 printable ASCII characters")
    return value


def _time(value: Any, what: str) -> int:
    try:
        return parse_time_us(value)
    except ValueError as exc:
        raise _fail(Code.INVALID_ENTRY, f"{what}: {exc}") from None


def _keys(obj: Any, what: str, required: set[str], optional: frozenset[str] = frozenset()) -> None:
    if type(obj) is not dict:
        raise _fail(Code.INVALID_ENTRY, f"{what} must be an object")
    if obj.keys() == required:  # the usual case, without building two sets
        return
    missing = required - obj.keys()
    extra = obj.keys() - required - optional
    if missing or extra:
        raise _fail(
            Code.INVALID_ENTRY, f"{what}: missing {sorted(missing)}, unknown {sorted(extra)}"
        )


_POSTING_OPTIONAL = frozenset({"lot", "lots", "expired", "debt"})
_ENTRY_REQUIRED = {"v", "seq", "prev", "time", "kind", "ref", "meta", "postings"}
_ENTRY_OPTIONAL = frozenset({"open", "hold", "capture", "void", "corrects"})


def _apply(entry: Any, state: State) -> Effects:
    _keys(entry, "entry", _ENTRY_REQUIRED, _ENTRY_OPTIONAL)
    if entry["v"] != FORMAT_VERSION or type(entry["v"]) is not int:
        raise _fail(Code.INVALID_ENTRY, f"v must be {FORMAT_VERSION}")
    seq = _int(entry["seq"], "seq")
    if seq != state.tree_size:
        raise _fail(Code.INVALID_ENTRY, f"seq {seq} but the chain holds {state.tree_size}")
    if entry["prev"] != state.prev_leaf_hash_hex:
        raise _fail(Code.INVALID_ENTRY, "prev is not the previous entry's leaf hash")
    time_us = _time(entry["time"], "time")
    if time_us < state.last_time_us:
        raise _fail(Code.INVALID_ENTRY, "time goes backwards")
    _str(entry["kind"], "kind", KIND_LENGTH_MAX)
    _keys(entry["ref"], "ref", {"scope", "key"})
    _str(entry["ref"]["scope"], "ref.scope")
    _str(entry["ref"]["key"], "ref.key")
    if type(entry["meta"]) is not dict:
        raise _fail(Code.INVALID_ENTRY, "meta must be an object")
    if sum(k in entry for k in ("hold", "capture", "void")) > 1:
        raise _fail(Code.INVALID_ENTRY, "an entry places, captures or voids at most one hold")

    fx = Effects(seq=seq, time_us=time_us)
    work = _Work(state, time_us)
    _open_accounts(entry.get("open", []), work, fx)
    capture = _capture_target(entry.get("capture"), work)
    capture_hold = capture[0] if capture is not None else None
    _postings(entry["postings"], work, fx, capture)
    if "hold" in entry:
        _place_hold(entry["hold"], work, fx)
    if capture_hold is not None:
        fx.hold_closed = capture_hold
    if "void" in entry:
        _keys(entry["void"], "void", {"hold"})
        fx.hold_closed = _active_hold(entry["void"]["hold"], work, allow_expired=True)
    if "corrects" in entry:
        corrects = _int(entry["corrects"], "corrects")
        if not 0 <= corrects < seq:
            raise _fail(Code.CORRECTS_UNKNOWN_ENTRY, f"entry {corrects} does not precede {seq}")
        fx.corrected = (corrects, _bounded_correction(corrects, fx, state))
    work.commit(fx, entry, seq, capture=capture_hold is not None)
    return fx


def moved_by(fx: Effects) -> dict[str, int]:
    """The net an entry's postings moved on each account (zero nets left out): what
    ``ledger.state.moves_of_entry`` reads from the entry's JSON, from its effects."""
    moved: dict[str, int] = {}
    for p in fx.postings:
        moved[p.account] = moved.get(p.account, 0) + p.amount
    return {account: net for account, net in moved.items() if net}


def _bounded_correction(corrected_seq: int, fx: Effects, state: State) -> Corrected:
    """On every account the corrected entry moved, its corrections together give back at
    most what it took and take back at most what it gave (partial corrections are fine
    until that is used up). Accounts it did not move are not bounded by this rule."""
    before = state.correction_bounds(corrected_seq)
    after = Corrected(before.moved, dict(before.given_back), dict(before.taken_back))
    moved_here = moved_by(fx)
    for account in sorted(moved_here):
        net, original = moved_here[account], before.moved.get(account)
        if original is None:
            continue
        if net > 0:
            total = after.given_back.get(account, 0) + net
            if total > max(0, -original):
                raise _fail(
                    Code.CORRECTION_EXCEEDS_ORIGINAL,
                    f"corrections of entry {corrected_seq} would give {total} back to {account},"
                    f" which it debited by {max(0, -original)}",
                )
            after.given_back[account] = total
        else:
            total = after.taken_back.get(account, 0) - net
            if total > max(0, original):
                raise _fail(
                    Code.CORRECTION_EXCEEDS_ORIGINAL,
                    f"corrections of entry {corrected_seq} would take {total} back from"
                    f" {account}, which it credited by {max(0, original)}",
                )
            after.taken_back[account] = total
    return after


class _Work:
    """Changes of one entry, kept apart from the state until every rule has passed."""

    def __init__(self, state: State, time_us: int) -> None:
        self.state = state
        self.time_us = time_us
        self.accounts: dict[str, Account] = {}
        self.balances: dict[str, int] = {}
        self.lot_remaining: dict[str, int] = {}

    def account(self, name: str) -> Account:
        found = self.accounts.get(name) or self.state.accounts.get(name)
        if found is None:
            raise _fail(Code.UNKNOWN_ACCOUNT, f"account {name} does not exist")
        return found

    def balance(self, name: str) -> int:
        return self.balances.get(name, self.state.balances.get(name, 0))

    def remaining(self, lot: Lot) -> int:
        return self.lot_remaining.get(lot.lot_id, lot.remaining)

    def lots_remaining(self, account: str) -> int:
        return sum(self.remaining(lot) for lot in self.state.account_lots(account))

    def spendable(self, account: str) -> int:
        return sum(
            self.remaining(lot)
            for lot in self.state.account_lots(account)
            if not lot.is_expired(self.time_us)
        )

    def commit(self, fx: Effects, entry: dict[str, Any], seq: int, *, capture: bool) -> None:
        state = self.state
        for acc in fx.accounts_opened:
            state.accounts[acc.name] = acc
            state.balances.setdefault(acc.name, 0)
        state.balances.update(self.balances)
        for lot_id, remaining in self.lot_remaining.items():
            state.lots[lot_id].remaining = remaining
            fx.lots_changed.add(lot_id)
        for lot in fx.lots_opened:
            state.add_lot(lot)
        if fx.hold_opened is not None:
            state.add_hold(fx.hold_opened)
        if fx.hold_closed is not None:
            fx.hold_closed.status = HOLD_CAPTURED if capture else HOLD_VOIDED
            fx.hold_closed.closed_seq = seq
            state.hold_seqs_by_account.get(fx.hold_closed.account, set()).discard(
                fx.hold_closed.hold_seq
            )
        if fx.corrected is not None:
            corrected_seq, bounds = fx.corrected
            state.corrected[corrected_seq] = bounds
        state.tree_size = seq + 1
        state.last_time_us = self.time_us


def _open_accounts(opens: Any, work: _Work, fx: Effects) -> None:
    if type(opens) is not list or len(opens) > OPENS_PER_ENTRY_MAX:
        raise _fail(Code.INVALID_ENTRY, f"open must be a list of ≤{OPENS_PER_ENTRY_MAX}")
    for spec in opens:
        _keys(spec, "open[]", {"account", "unit", "overdraft", "lots"})
        name = _name(spec["account"], "open.account")
        unit = spec["unit"]
        if type(unit) is not str or not is_valid_unit(unit):
            raise _fail(Code.INVALID_ENTRY, f"unit {unit!r} is neither PTS nor an ISO 4217 code")
        if type(spec["overdraft"]) is not bool or type(spec["lots"]) is not bool:
            raise _fail(Code.INVALID_ENTRY, "open.overdraft and open.lots must be booleans")
        wanted = Account(name, unit, spec["overdraft"], spec["lots"], fx.seq)
        existing = work.accounts.get(name) or work.state.accounts.get(name)
        if existing is not None:
            same = (existing.unit, existing.overdraft, existing.lot_tracked) == (
                unit,
                wanted.overdraft,
                wanted.lot_tracked,
            )
            if not same:
                raise _fail(Code.ACCOUNT_EXISTS, f"account {name} exists with other properties")
            continue  # opening an identical account again is a no-op
        work.accounts[name] = wanted
        fx.accounts_opened.append(wanted)


def _active_hold(hold_seq: Any, work: _Work, *, allow_expired: bool) -> Hold:
    hold = work.state.holds.get(_int(hold_seq, "hold"))
    if hold is None:
        raise _fail(Code.HOLD_UNKNOWN, f"no hold was placed by entry {hold_seq}")
    if hold.status != "active":
        raise _fail(Code.HOLD_NOT_ACTIVE, f"hold {hold_seq} is already {hold.status}")
    if not allow_expired and hold.expires_us <= work.time_us:
        raise _fail(Code.HOLD_EXPIRED, f"hold {hold_seq} has expired")
    return hold


def _capture_target(capture: Any, work: _Work) -> tuple[Hold, int] | None:
    if capture is None:
        return None
    _keys(capture, "capture", {"hold", "amount"})
    hold = _active_hold(capture["hold"], work, allow_expired=False)
    amount = _int(capture["amount"], "capture.amount")
    if amount <= 0:
        raise _fail(Code.INVALID_ENTRY, "capture.amount must be positive")
    if amount > hold.amount:
        raise _fail(Code.CAPTURE_EXCEEDS_HOLD, f"capture {amount} > hold {hold.amount}")
    return hold, amount


def _postings(postings: Any, work: _Work, fx: Effects, capture: tuple[Hold, int] | None) -> None:
    if type(postings) is not list or len(postings) > POSTINGS_PER_ENTRY_MAX:
        raise _fail(Code.INVALID_ENTRY, f"postings must be a list of ≤{POSTINGS_PER_ENTRY_MAX}")
    sums: dict[str, int] = {}
    debited: set[str] = set()
    in_debt: set[str] = set()  # lot-tracked accounts this entry lets carry debt
    for index, posting in enumerate(postings):
        _keys(posting, "posting", {"account", "unit", "amount"}, _POSTING_OPTIONAL)
        account = work.account(_name(posting["account"], "posting.account"))
        unit = posting["unit"]
        if unit != account.unit:
            raise _fail(Code.UNIT_MISMATCH, f"{account.name} holds {account.unit}, not {unit!r}")
        amount = _int(posting["amount"], "posting.amount")
        if amount == 0 or not amount_in_range(amount):
            raise _fail(Code.AMOUNT_OUT_OF_RANGE, f"amount must be non-zero within ±{AMOUNT_MAX}")
        sums[unit] = sums.get(unit, 0) + amount
        if account.lot_tracked:
            if amount > 0:
                _lot_credit(posting, index, amount, account, work, fx)
            else:
                if _lot_debit(posting, -amount, account, work):
                    in_debt.add(account.name)
        elif posting.keys() - {"account", "unit", "amount"}:
            raise _fail(Code.INVALID_ENTRY, f"{account.name} is not lot-tracked")
        balance_after = work.balance(account.name) + amount
        if not amount_in_range(balance_after):
            raise _fail(Code.BALANCE_OUT_OF_RANGE, f"{account.name} would leave ±{AMOUNT_MAX}")
        work.balances[account.name] = balance_after
        if amount < 0:
            debited.add(account.name)
        fx.postings.append(PostingEffect(index, account.name, unit, amount, balance_after))
    unbalanced = sorted(u for u, total in sums.items() if total != 0)
    if unbalanced:
        raise _fail(Code.POSTINGS_MUST_BALANCE, f"postings do not sum to zero in {unbalanced}")
    excluded_hold_seq = -1
    if capture is not None:
        hold, amount = capture
        net = sum(p.amount for p in fx.postings if p.account == hold.account)
        if net != -amount:
            raise _fail(Code.CAPTURE_MISMATCH, f"postings must debit {hold.account} by {amount}")
        excluded_hold_seq = hold.hold_seq
    for name in sorted(debited - in_debt):
        _check_available(work.account(name), work, excluded_hold_seq)


def _check_available(account: Account, work: _Work, excluded_hold_seq: int, extra: int = 0) -> None:
    """An account never goes below what its holds reserve — unless it is an overdraft
    account without lots, or a lot-tracked one whose debit says it may carry debt."""
    if account.overdraft and not account.lot_tracked:
        return
    held = work.state.held_amount(account.name, work.time_us, excluded_hold_seq) + extra
    if work.balance(account.name) - held < 0:
        raise _fail(Code.INSUFFICIENT_BALANCE, f"{account.name} lacks the amount")
    if account.lot_tracked and work.spendable(account.name) - held < 0:
        raise _fail(Code.INSUFFICIENT_BALANCE, f"{account.name} lacks unexpired lots")


def _lot_credit(
    posting: dict[str, Any], index: int, amount: int, account: Account, work: _Work, fx: Effects
) -> None:
    if "expired" in posting or "debt" in posting:
        raise _fail(Code.INVALID_ENTRY, "only a debit takes expired lots or carries debt")
    if "lots" in posting:  # giving back to lots it came from (a reversal)
        if "lot" in posting:
            raise _fail(Code.INVALID_ENTRY, "a credit either opens a lot or restores lots")
        restored = 0
        for lot, take in _named_lots(posting["lots"], account, work):
            if work.remaining(lot) + take > lot.amount_opened:
                raise _fail(Code.LOT_RESTORE_EXCEEDS_CONSUMED, f"lot {lot.lot_id} would overflow")
            work.lot_remaining[lot.lot_id] = work.remaining(lot) + take
            restored += take
        if restored != amount:
            raise _fail(Code.INVALID_ENTRY, "restored lots must add up to the credit")
        return
    spec: Any = posting.get("lot")
    _keys(spec, "posting.lot", {"origin", "expires", "amount"})
    origin = _name(spec["origin"], "lot.origin")
    expires_us = None if spec["expires"] is None else _time(spec["expires"], "lot.expires")
    debt = max(0, work.lots_remaining(account.name) - work.balance(account.name))
    opened = amount - min(amount, debt)  # a debt (clawback) is repaid before a lot opens
    if _int(spec["amount"], "lot.amount") != opened:
        raise _fail(Code.INVALID_ENTRY, f"lot.amount must be {opened} after repaying debt")
    if opened:
        lot = Lot(
            f"{fx.seq}:{index}", account.name, origin, expires_us, fx.seq, index, opened, opened
        )
        fx.lots_opened.append(lot)


def _lot_debit(posting: dict[str, Any], amount: int, account: Account, work: _Work) -> bool:
    """Take the named lots; return True when this debit may leave the account in debt."""
    if "lot" in posting:
        raise _fail(Code.INVALID_ENTRY, "a debit does not open a lot")
    may_owe = posting.get("debt", False)
    if may_owe is not False and may_owe is not True:
        raise _fail(Code.INVALID_ENTRY, "posting.debt must be a boolean")
    if may_owe and not account.overdraft:
        raise _fail(Code.INVALID_ENTRY, f"{account.name} may not carry debt")
    take_expired = posting.get("expired", False)
    if take_expired is not False and take_expired is not True:
        raise _fail(Code.INVALID_ENTRY, "posting.expired must be a boolean")
    if "lots" not in posting:
        raise _fail(Code.INVALID_ENTRY, "a debit of a lot-tracked account names its lots")
    taken = 0
    for lot, take in _named_lots(posting["lots"], account, work, allow_empty=True):
        if lot.is_expired(work.time_us) != take_expired:
            code = Code.LOT_EXPIRED if not take_expired else Code.LOT_NOT_EXPIRED
            raise _fail(code, f"lot {lot.lot_id} expired={not take_expired}")
        if take > work.remaining(lot):
            raise _fail(Code.LOT_INSUFFICIENT, f"lot {lot.lot_id} holds {work.remaining(lot)}")
        work.lot_remaining[lot.lot_id] = work.remaining(lot) - take
        taken += take
    if taken > amount:
        raise _fail(Code.INVALID_ENTRY, "lots taken exceed the debit")
    if taken < amount and not may_owe:
        raise _fail(Code.INSUFFICIENT_BALANCE, f"{account.name} lacks {amount - taken} in lots")
    return bool(may_owe)


def _named_lots(
    named: Any, account: Account, work: _Work, *, allow_empty: bool = False
) -> list[tuple[Lot, int]]:
    if type(named) is not list or len(named) > LOTS_PER_POSTING_MAX:
        raise _fail(Code.INVALID_ENTRY, f"lots must be a list of ≤{LOTS_PER_POSTING_MAX}")
    if not named and not allow_empty:
        raise _fail(Code.INVALID_ENTRY, f"lots must be a list of 1–{LOTS_PER_POSTING_MAX}")
    out: list[tuple[Lot, int]] = []
    for item in named:
        _keys(item, "lots[]", {"lot", "amount"})
        lot = work.state.lots.get(item["lot"]) if type(item["lot"]) is str else None
        if lot is None or lot.account != account.name:
            raise _fail(Code.LOT_UNKNOWN, f"lot {item['lot']!r} is not in {account.name}")
        take = _int(item["amount"], "lots[].amount")
        if take <= 0:
            raise _fail(Code.INVALID_ENTRY, "a lot amount must be positive")
        out.append((lot, take))
    return out


def _place_hold(spec: Any, work: _Work, fx: Effects) -> None:
    _keys(spec, "hold", {"account", "unit", "amount", "expires"})
    account = work.account(_name(spec["account"], "hold.account"))
    if spec["unit"] != account.unit:
        raise _fail(Code.UNIT_MISMATCH, f"{account.name} holds {account.unit}")
    amount = _int(spec["amount"], "hold.amount")
    if not 0 < amount <= AMOUNT_MAX:
        raise _fail(Code.AMOUNT_OUT_OF_RANGE, "a hold amount must be positive")
    expires_us = _time(spec["expires"], "hold.expires")
    if expires_us <= work.time_us:
        raise _fail(Code.INVALID_ENTRY, "a hold must expire after it is placed")
    _check_available(account, work, -1, extra=amount)
    fx.hold_opened = Hold(fx.seq, account.name, account.unit, amount, expires_us)

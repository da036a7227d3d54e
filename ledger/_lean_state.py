"""The lean replay's state: flat tables of strings, ints and small lists.

``ledger.state.State`` keeps an object per account, lot and hold, and ``ledger.rules``
builds a work overlay, an ``Effects`` and a ``PostingEffect`` per posting for every
entry. The lean replay keeps the same facts (docs/FORMAT.md §7) in dicts keyed by name,
lot id and hold seq, changes them in place, and writes what it changed to an undo log,
so an entry that fails leaves the state exactly as it was before it (the reference then
judges that entry on that state, see ``ledger._lean_refer``).

A lot is the list ``[remaining, opened, expires_us, account, lot_id]`` and a hold the list
``[amount, expires_us, account, status]``: one object each for the journal's lifetime,
changed in place, and indexable without attribute lookups.
"""

from __future__ import annotations

from typing import Any, Final

from ledger.state import ZERO_HASH_HEX
from ledger.timefmt import TIME_MAX_US, parse_time_us

OVERDRAFT: Final = 1  # bits of an account's flags
LOT_TRACKED: Final = 2
NEVER_US: Final = TIME_MAX_US + 1  # a lot without expiry: later than every valid time

# Lot fields
REMAINING, OPENED, EXPIRES, ACCOUNT, LOT_ID = 0, 1, 2, 3, 4
# Hold fields
H_AMOUNT, H_EXPIRES, H_ACCOUNT, H_STATUS = 0, 1, 2, 3
ACTIVE, CAPTURED, VOIDED = 0, 1, 2

TIMES_CACHED_MAX = 65_536  # distinct time strings kept parsed (expiries vary a lot)

Lot = list[Any]
Hold = list[Any]
Bounds = tuple[dict[str, int], dict[str, int], dict[str, int]]  # moved, given, taken back


class LeanState:
    __slots__ = (
        "balance",
        "corrected",
        "debited",
        "flags",
        "held_of",
        "holds",
        "in_debt",
        "last_time_us",
        "lots",
        "lots_of",
        "new_lots",
        "prev_hex",
        "times",
        "tree_size",
        "undo_balance",
        "undo_lot",
        "undo_open",
        "unit",
        "valid_names",
        "valid_texts",
    )

    def __init__(self) -> None:
        self.tree_size = 0
        self.prev_hex = ZERO_HASH_HEX
        self.last_time_us = 0
        self.unit: dict[str, str] = {}
        self.flags: dict[str, int] = {}
        self.balance: dict[str, int] = {}
        self.lots: dict[str, Lot] = {}
        self.lots_of: dict[str, list[Lot]] = {}
        self.holds: dict[int, Hold] = {}
        self.held_of: dict[str, dict[int, Hold]] = {}  # active holds only
        self.corrected: dict[int, Bounds] = {}
        self.times: dict[str, int] = {}
        self.valid_names: set[str] = set()  # account names and lot origins (ASCII, 1–128)
        self.valid_texts: set[str] = set()  # kinds and ref scopes: strings of 1–64 code points
        # Undo logs of the entry being judged: flat lists (name, old balance, …),
        # (lot, old remaining, …) and names opened, cleared when it is accepted.
        self.undo_balance: list[Any] = []
        self.undo_lot: list[Any] = []
        self.undo_open: list[str] = []
        # Scratch of ledger._lean_rules.apply_state, reused rather than built per entry.
        self.debited: list[str] = []
        self.in_debt: list[str] = []
        self.new_lots: list[Any] = []

    def time_us(self, text: Any) -> int:
        """``parse_time_us`` behind a cache: an entry's time repeats over its batch."""
        cached = self.times.get(text)
        if cached is not None:
            return cached
        value = parse_time_us(text)  # ValueError on anything but the fixed format
        if len(self.times) >= TIMES_CACHED_MAX:
            self.times.clear()
        self.times[text] = value
        return value

    def accept(self) -> None:
        """Forget the undo logs (most entries leave two of three empty: no call then)."""
        if self.undo_balance:
            self.undo_balance.clear()
        if self.undo_lot:
            self.undo_lot.clear()
        if self.undo_open:
            self.undo_open.clear()

    def undo(self) -> None:
        """Put back what the entry being judged changed before it failed."""
        log = self.undo_lot
        for i in range(len(log) - 2, -1, -2):
            log[i][REMAINING] = log[i + 1]
        log = self.undo_balance
        for i in range(len(log) - 2, -1, -2):
            self.balance[log[i]] = log[i + 1]
        for name in self.undo_open:
            del self.unit[name], self.flags[name], self.balance[name]
        self.accept()
        self.debited.clear()  # scratch an entry that failed half-way may have left
        self.in_debt.clear()
        self.new_lots.clear()

    def add_lot(self, lot_id: str, lot: Lot) -> None:
        self.lots[lot_id] = lot
        of = self.lots_of.get(lot[ACCOUNT])
        if of is None:
            self.lots_of[lot[ACCOUNT]] = [lot]
        else:
            of.append(lot)

    def add_hold(self, hold_seq: int, hold: Hold) -> None:
        self.holds[hold_seq] = hold
        if hold[H_STATUS] == ACTIVE:
            self.held_of.setdefault(hold[H_ACCOUNT], {})[hold_seq] = hold

    def close_hold(self, hold_seq: int, status: int) -> None:
        hold = self.holds[hold_seq]
        hold[H_STATUS] = status
        self.held_of[hold[H_ACCOUNT]].pop(hold_seq, None)

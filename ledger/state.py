"""The journal's derived state: accounts, balances, lots and holds.

The same rules (``ledger.rules``) run over it on the write path, where it holds just the
accounts a batch touches, loaded from the database under the chain-head lock, and in
verification, where it is replayed from the first entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

ZERO_HASH_HEX = "0" * 64


@dataclass(slots=True)
class Account:
    name: str
    unit: str
    overdraft: bool
    lot_tracked: bool
    opened_seq: int


@dataclass(slots=True)
class Lot:
    lot_id: str  # "<seq>:<posting index>" of the credit that opened it
    account: str
    origin: str
    expires_us: int | None  # None: never expires
    opened_seq: int
    posting_index: int
    amount_opened: int
    remaining: int

    def is_expired(self, time_us: int) -> bool:
        return self.expires_us is not None and self.expires_us <= time_us

    def fefo_key(self) -> tuple[bool, int, int, int]:
        """First-expiring-first; never-expiring last; ties oldest first."""
        return (self.expires_us is None, self.expires_us or 0, self.opened_seq, self.posting_index)


HOLD_ACTIVE = "active"
HOLD_CAPTURED = "captured"
HOLD_VOIDED = "voided"


@dataclass(slots=True)
class Hold:
    hold_seq: int
    account: str
    unit: str
    amount: int
    expires_us: int
    status: str = HOLD_ACTIVE
    closed_seq: int | None = None

    def reserves_at(self, time_us: int) -> bool:
        return self.status == HOLD_ACTIVE and self.expires_us > time_us


@dataclass(slots=True)
class Corrected:
    """An entry that later entries correct: what it moved on each account (the net of its
    postings there), and what its corrections have given back to and taken back from each
    of those accounts so far. ``ledger.rules`` bounds the corrections by it."""

    moved: dict[str, int]
    given_back: dict[str, int] = field(default_factory=dict)
    taken_back: dict[str, int] = field(default_factory=dict)


def moves_of_entry(postings: list[dict[str, object]]) -> dict[str, int]:
    """The net amount an entry's postings move on each account (zero nets left out)."""
    moved: dict[str, int] = {}
    for posting in postings:
        account, amount = posting["account"], posting["amount"]
        assert type(account) is str and type(amount) is int
        moved[account] = moved.get(account, 0) + amount
    return {account: net for account, net in moved.items() if net}


MovesOf = Callable[[int], dict[str, int]]


def _no_moves(seq: int) -> dict[str, int]:
    raise AssertionError(f"entry {seq}'s postings were not loaded before it was corrected")


@dataclass(slots=True)
class State:
    tree_size: int = 0
    prev_leaf_hash_hex: str = ZERO_HASH_HEX
    last_time_us: int = 0
    accounts: dict[str, Account] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)
    lots: dict[str, Lot] = field(default_factory=dict)
    lot_ids_by_account: dict[str, list[str]] = field(default_factory=dict)
    holds: dict[int, Hold] = field(default_factory=dict)
    hold_seqs_by_account: dict[str, set[int]] = field(default_factory=dict)
    # Entries that others correct, by seq. The write path loads those a batch corrects;
    # a replay asks ``moves_of`` for an earlier entry's moves the first time it is corrected.
    corrected: dict[int, Corrected] = field(default_factory=dict)
    moves_of: MovesOf = _no_moves

    def correction_bounds(self, corrected_seq: int) -> Corrected:
        bounds = self.corrected.get(corrected_seq)
        if bounds is None:
            bounds = Corrected(self.moves_of(corrected_seq))
        return bounds

    def add_lot(self, lot: Lot) -> None:
        self.lots[lot.lot_id] = lot
        self.lot_ids_by_account.setdefault(lot.account, []).append(lot.lot_id)

    def add_hold(self, hold: Hold) -> None:
        self.holds[hold.hold_seq] = hold
        if hold.status == HOLD_ACTIVE:
            self.hold_seqs_by_account.setdefault(hold.account, set()).add(hold.hold_seq)

    def account_lots(self, account: str) -> list[Lot]:
        return [self.lots[i] for i in self.lot_ids_by_account.get(account, ())]

    def held_amount(self, account: str, time_us: int, excluding_hold_seq: int = -1) -> int:
        total = 0
        for hold_seq in self.hold_seqs_by_account.get(account, ()):
            hold = self.holds[hold_seq]
            if hold_seq != excluding_hold_seq and hold.reserves_at(time_us):
                total += hold.amount
        return total

    def lots_remaining(self, account: str) -> int:
        return sum(lot.remaining for lot in self.account_lots(account))

    def spendable_lots(self, account: str, time_us: int) -> int:
        return sum(
            lot.remaining for lot in self.account_lots(account) if not lot.is_expired(time_us)
        )

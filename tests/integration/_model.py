"""A plain in-memory model of the journal, for the stateful test.

It is written from docs/FORMAT.md §3–7 and the request docstrings, not from ``ledger.rules`` or
``ledger.state``: if both were the same code, a wrong rule would agree with itself. It
predicts, for each request, whether the journal accepts it (and which lots a debit takes,
how big a new lot is) or which rejection code it returns.

Where one request breaks several rules, the code the ledger reports is the first rule in
the order an entry is read: opens, the hold to capture, postings one by one (account,
unit, amount, lots), the per-unit balance, the capture amount, what debited accounts have
left, then the hold to place, the hold to void and the corrected entry.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field

from ledger.rejections import RejectionCode as Code
from ledger.requests import AccountSpec, EntryRequest, LotTake, PostingRequest

ACTIVE, CAPTURED, VOIDED = "active", "captured", "voided"


class Refusal(Exception):
    def __init__(self, code: Code) -> None:
        super().__init__(code.value)
        self.code = code


@dataclass
class Lot:
    lot_id: str
    account: str
    origin: str
    expires_us: int | None
    opened: int
    remaining: int
    seq: int
    index: int

    def expired(self, now_us: int) -> bool:
        return self.expires_us is not None and self.expires_us <= now_us

    def order(self) -> tuple[bool, int, int, int]:
        # First-expiring-first, never-expiring last, ties by age.
        return (self.expires_us is None, self.expires_us or 0, self.seq, self.index)


@dataclass
class Hold:
    seq: int
    account: str
    amount: int
    expires_us: int
    status: str = ACTIVE
    closed_seq: int | None = None


@dataclass
class Book:
    accounts: dict[str, AccountSpec] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)
    # What a lot-tracked overdraft account owes beyond its lots (left by debits that
    # allowed debt); its next credits repay it before opening a lot.
    debts: dict[str, int] = field(default_factory=dict)
    lots: dict[str, Lot] = field(default_factory=dict)
    holds: dict[int, Hold] = field(default_factory=dict)
    # seq of a corrected entry -> account -> [given back, taken back] by its corrections
    corrections: dict[int, dict[str, list[int]]] = field(default_factory=dict)

    def held(self, account: str, now_us: int, excluding_seq: int | None = None) -> int:
        return sum(
            h.amount
            for h in self.holds.values()
            if h.account == account
            and h.status == ACTIVE
            and h.expires_us > now_us
            and h.seq != excluding_seq
        )

    def lots_of(self, account: str) -> list[Lot]:
        return [lot for lot in self.lots.values() if lot.account == account]

    def spendable(self, account: str, now_us: int) -> int:
        return sum(lot.remaining for lot in self.lots_of(account) if not lot.expired(now_us))

    def available(self, account: str, now_us: int) -> int:
        """What a debit of ``account`` may take without allowing debt."""
        balance = self.balances.get(account, 0)
        if self.accounts.get(account, AccountSpec("", "")).lot_tracked:
            balance = min(balance, self.spendable(account, now_us))
        return balance - self.held(account, now_us)


@dataclass(frozen=True)
class Accepted:
    seq: int
    taken: dict[int, list[tuple[str, int]]]  # posting index -> lots a debit takes
    opened: dict[int, int]  # posting index -> size of the lot a credit opens (0: none)


@dataclass(frozen=True)
class Replayed:
    seq: int


@dataclass(frozen=True)
class Refused:
    code: Code


Outcome = Accepted | Replayed | Refused


@dataclass(frozen=True)
class Recorded:
    request: EntryRequest
    outcome: Accepted


class Model:
    def __init__(self, now_us: int) -> None:
        self.now_us = now_us
        self.book = Book()
        self.size = 0
        self.postings = 0
        self.refs: dict[tuple[str, str], Recorded] = {}
        self.accepted: list[Recorded] = []
        self.moves: list[dict[str, int]] = []  # per seq: net amount per account

    def submit(self, request: EntryRequest) -> Outcome:
        """Predict the outcome of ``request`` and, if accepted, apply it."""
        seen = self.refs.get((request.ref_scope, request.ref_key))
        if seen is not None:
            if seen.request == request:
                return Replayed(seen.outcome.seq)
            return Refused(Code.IDEMPOTENCY_CONFLICT)
        trial = copy.deepcopy(self.book)
        try:
            outcome = _Entry(trial, self.now_us, self.size, self.moves).apply(request)
        except Refusal as refusal:
            return Refused(refusal.code)
        self.book = trial
        self.size += 1
        self.postings += len(request.postings)
        self.moves.append(_moves(request))
        recorded = Recorded(request, outcome)
        self.refs[(request.ref_scope, request.ref_key)] = recorded
        self.accepted.append(recorded)
        return outcome


def _moves(request: EntryRequest) -> dict[str, int]:
    moved: dict[str, int] = defaultdict(int)
    for posting in request.postings:
        moved[posting.account] += posting.amount
    return {account: net for account, net in moved.items() if net}


class _Entry:
    def __init__(self, book: Book, now_us: int, seq: int, moves: list[dict[str, int]]) -> None:
        self.book, self.now_us, self.seq, self.moves = book, now_us, seq, moves

    def apply(self, request: EntryRequest) -> Accepted:
        for spec in request.open_accounts:
            self._open(spec)
        capture = self._capture_target(request)
        taken: dict[int, list[tuple[str, int]]] = {}
        opened: dict[int, int] = {}
        sums: dict[str, int] = defaultdict(int)
        debited: set[str] = set()
        owing: set[str] = set()  # debited by a posting that lets it carry debt
        for index, posting in enumerate(request.postings):
            spec = self._account(posting.account)
            if posting.unit != spec.unit:
                raise Refusal(Code.UNIT_MISMATCH)
            if posting.amount == 0:
                raise Refusal(Code.AMOUNT_OUT_OF_RANGE)
            sums[posting.unit] += posting.amount
            if spec.lot_tracked and posting.amount > 0:
                if posting.allow_debt:
                    raise Refusal(Code.INVALID_ENTRY)
                if posting.lots is not None:
                    self._restore(posting, spec)
                else:
                    opened[index] = self._open_lot(posting, index)
            elif spec.lot_tracked:
                taken[index] = self._take(posting, spec)
                if posting.allow_debt:
                    owing.add(posting.account)
            elif _asks_for_lots(posting):
                raise Refusal(Code.INVALID_ENTRY)
            self.book.balances[posting.account] += posting.amount
            if posting.amount < 0:
                debited.add(posting.account)
        if any(total != 0 for total in sums.values()):
            raise Refusal(Code.POSTINGS_MUST_BALANCE)
        if capture is not None:
            net = sum(p.amount for p in request.postings if p.account == capture.account)
            if net != -(request.capture_amount or 0):
                raise Refusal(Code.CAPTURE_MISMATCH)
        for account in debited - owing:
            excluded = capture.seq if capture is not None else None
            self._check_left(account, self.book.held(account, self.now_us, excluded))
        if request.hold is not None:
            self._place_hold(request)
        if capture is not None:
            capture.status, capture.closed_seq = CAPTURED, self.seq
        if request.void_hold_seq is not None:
            hold = self._hold(request.void_hold_seq)
            hold.status, hold.closed_seq = VOIDED, self.seq
        if request.corrects_seq is not None and not 0 <= request.corrects_seq < self.seq:
            raise Refusal(Code.CORRECTS_UNKNOWN_ENTRY)
        if request.corrects_seq is not None:
            self._bound_correction(request.corrects_seq, _moves(request))
        return Accepted(self.seq, taken, opened)

    def _bound_correction(self, corrected: int, moved_here: dict[str, int]) -> None:
        """Corrections of an entry give back to each account it moved at most what it
        took there, and take back at most what it gave (docs/FORMAT.md §3a)."""
        original = self.moves[corrected]
        so_far = self.book.corrections.setdefault(corrected, {})
        for account, net in moved_here.items():
            if account not in original:
                continue
            given_taken = so_far.setdefault(account, [0, 0])
            if net > 0:
                given_taken[0] += net
                if given_taken[0] > max(0, -original[account]):
                    raise Refusal(Code.CORRECTION_EXCEEDS_ORIGINAL)
            else:
                given_taken[1] -= net
                if given_taken[1] > max(0, original[account]):
                    raise Refusal(Code.CORRECTION_EXCEEDS_ORIGINAL)

    def _open(self, spec: AccountSpec) -> None:
        existing = self.book.accounts.get(spec.account)
        if existing is None:
            self.book.accounts[spec.account] = spec
            self.book.balances[spec.account] = 0
            self.book.debts[spec.account] = 0
        elif existing != spec:
            raise Refusal(Code.ACCOUNT_EXISTS)

    def _account(self, name: str) -> AccountSpec:
        spec = self.book.accounts.get(name)
        if spec is None:
            raise Refusal(Code.UNKNOWN_ACCOUNT)
        return spec

    def _hold(self, seq: int) -> Hold:
        hold = self.book.holds.get(seq)
        if hold is None:
            raise Refusal(Code.HOLD_UNKNOWN)
        if hold.status != ACTIVE:
            raise Refusal(Code.HOLD_NOT_ACTIVE)
        return hold

    def _capture_target(self, request: EntryRequest) -> Hold | None:
        if request.capture_hold_seq is None:
            return None
        hold = self._hold(request.capture_hold_seq)
        if hold.expires_us <= self.now_us:
            raise Refusal(Code.HOLD_EXPIRED)
        amount = request.capture_amount or 0
        if amount <= 0:
            raise Refusal(Code.INVALID_ENTRY)
        if amount > hold.amount:
            raise Refusal(Code.CAPTURE_EXCEEDS_HOLD)
        return hold

    def _named(self, takes: tuple[LotTake, ...], account: str) -> list[tuple[Lot, int]]:
        named = []
        for take in takes:
            lot = self.book.lots.get(take.lot_id)
            if lot is None or lot.account != account:
                raise Refusal(Code.LOT_UNKNOWN)
            if take.amount <= 0:
                raise Refusal(Code.INVALID_ENTRY)
            named.append((lot, take.amount))
        return named

    def _restore(self, posting: PostingRequest, spec: AccountSpec) -> None:
        assert posting.lots is not None
        if not posting.lots:
            raise Refusal(Code.INVALID_ENTRY)
        for lot, amount in self._named(posting.lots, spec.account):
            if lot.remaining + amount > lot.opened:
                raise Refusal(Code.LOT_RESTORE_EXCEEDS_CONSUMED)
            lot.remaining += amount
        if sum(t.amount for t in posting.lots) != posting.amount:
            raise Refusal(Code.INVALID_ENTRY)

    def _open_lot(self, posting: PostingRequest, index: int) -> int:
        debt = self.book.debts[posting.account]
        repaid = min(debt, posting.amount)
        self.book.debts[posting.account] = debt - repaid
        size = posting.amount - repaid
        if size:
            lot_id = f"{self.seq}:{index}"
            origin = posting.lot_origin or ""
            self.book.lots[lot_id] = Lot(
                lot_id, posting.account, origin, posting.lot_expires_us, size, size, self.seq, index
            )
        return size

    def _take(self, posting: PostingRequest, spec: AccountSpec) -> list[tuple[str, int]]:
        wanted = -posting.amount
        if posting.allow_debt and not spec.overdraft:
            raise Refusal(Code.INVALID_ENTRY)
        if posting.lots is not None:
            chosen = []
            for lot, amount in self._named(posting.lots, spec.account):
                if lot.expired(self.now_us) != posting.take_expired:
                    code = Code.LOT_NOT_EXPIRED if posting.take_expired else Code.LOT_EXPIRED
                    raise Refusal(code)
                if amount > lot.remaining:
                    raise Refusal(Code.LOT_INSUFFICIENT)
                lot.remaining -= amount
                chosen.append((lot.lot_id, amount))
        else:
            chosen = self._first_expiring(spec.account, wanted, posting.take_expired)
        total = sum(amount for _, amount in chosen)
        if total > wanted:
            raise Refusal(Code.INVALID_ENTRY)
        if total < wanted and not posting.allow_debt:
            raise Refusal(Code.INSUFFICIENT_BALANCE)
        self.book.debts[spec.account] += wanted - total
        return chosen

    def _first_expiring(
        self, account: str, wanted: int, take_expired: bool
    ) -> list[tuple[str, int]]:
        candidates = [
            lot
            for lot in self.book.lots_of(account)
            if lot.remaining > 0 and lot.expired(self.now_us) == take_expired
        ]
        chosen = []
        for lot in sorted(candidates, key=Lot.order):
            if wanted == 0:
                break
            amount = min(wanted, lot.remaining)
            lot.remaining -= amount
            wanted -= amount
            chosen.append((lot.lot_id, amount))
        return chosen

    def _check_left(self, account: str, held: int) -> None:
        """After its debits an account still covers what its holds reserve, unless it is a
        plain overdraft account (an issuer) or one of its debits allowed debt."""
        spec = self.book.accounts[account]
        if spec.overdraft and not spec.lot_tracked:
            return
        if self.book.balances[account] - held < 0:
            raise Refusal(Code.INSUFFICIENT_BALANCE)
        if spec.lot_tracked and self.book.spendable(account, self.now_us) - held < 0:
            raise Refusal(Code.INSUFFICIENT_BALANCE)

    def _place_hold(self, request: EntryRequest) -> None:
        assert request.hold is not None
        hold = request.hold
        spec = self._account(hold.account)
        if hold.unit != spec.unit:
            raise Refusal(Code.UNIT_MISMATCH)
        if hold.amount <= 0:
            raise Refusal(Code.AMOUNT_OUT_OF_RANGE)
        if hold.expires_us <= self.now_us:
            raise Refusal(Code.INVALID_ENTRY)
        self._check_left(hold.account, self.book.held(hold.account, self.now_us) + hold.amount)
        self.book.holds[self.seq] = Hold(self.seq, hold.account, hold.amount, hold.expires_us)


def _asks_for_lots(posting: PostingRequest) -> bool:
    return (
        posting.lots is not None
        or posting.lot_origin is not None
        or posting.lot_expires_us is not None
        or posting.take_expired
        or posting.allow_debt
    )

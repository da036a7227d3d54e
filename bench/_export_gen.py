"""A realistic journal, generated in memory with the ledger's own pure functions.

Going through PostgreSQL would take far longer than the verification being measured, so
entries are built exactly as ``ledger.journal`` builds them (build_entry, the rules'
apply_entry on a State, canonical_bytes, the leaf hash) without the database. Entries
come in batches that share one time, as group commit gives them. The mix: lot-tracked
earns (partners issuing points that expire, or not), spends consuming lots
first-expiring-first, holds later captured or voided, and money postings between
partners' settlement accounts. A request the rules reject is left out, as the journal
would; ``bench.verify`` replays the first batches through the real write path to show
the bytes are the same.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from ledger.build import build_entry
from ledger.canonical import canonical_bytes
from ledger.rejections import Rejection
from ledger.requests import AccountSpec, EntryRequest, HoldRequest, PostingRequest
from ledger.rules import apply_entry
from ledger.state import State

T0_US = 1_800_000_000_000_000  # 2027-01-15
DAY_US = 86_400_000_000
ENTRIES_PER_BATCH = 100
BATCH_STEP_US = 5 * 60 * 1_000_000  # one batch every five minutes
HOLD_LIFETIME_US = 3_600_000_000
PARTNERS_COUNT = 12
OPENS_PER_ENTRY = 16
# Shares of the request mix; what is left over is money moving between partners.
EARN, SPEND, HOLD, CAPTURE, VOID = 0.38, 0.25, 0.07, 0.05, 0.02


def _view(state: State, request: EntryRequest) -> State:
    """The state as the write path loads it: only the accounts the request names.

    build_entry looks at every account in the state it is given, which is right for the
    few a batch loads but would make a generator holding all members quadratic. Lots,
    balances and holds are shared, not copied: build_entry only reads them.
    """
    names = {p.account for p in request.postings}
    if request.hold is not None:
        names.add(request.hold.account)
    accounts = {n: state.accounts[n] for n in names if n in state.accounts}
    return State(
        state.tree_size,
        state.prev_leaf_hash_hex,
        state.last_time_us,
        accounts,
        state.balances,
        state.lots,
        state.lot_ids_by_account,
        state.holds,
        state.hold_seqs_by_account,
    )


@dataclass(slots=True)
class Batch:
    time_us: int
    requests: list[EntryRequest]
    lines: list[bytes] = field(default_factory=list)  # canonical bytes + b"\n", accepted only


@dataclass(slots=True)
class Tally:
    kinds: dict[str, int] = field(default_factory=dict)
    rejected: int = 0


class ExportGenerator:
    def __init__(self, members_count: int, seed: int = 7) -> None:
        self.state = State()
        self.rng = random.Random(seed)
        self.members_count = members_count
        self.members_opened: list[str] = []
        self.active_holds: deque[int] = deque()
        self.tally = Tally()
        self._keys = 0

    def batches(self, entries_count: int) -> Iterator[Batch]:
        """Batches until ``entries_count`` entries are accepted (the last one trimmed)."""
        time_us = T0_US
        yield self._run(Batch(time_us, self._setup_requests()))
        while self.state.tree_size < entries_count:
            time_us += BATCH_STEP_US
            batch = Batch(time_us, [])
            wanted = min(ENTRIES_PER_BATCH, entries_count - self.state.tree_size)
            while len(batch.lines) < wanted:
                request = self._next_request(time_us)
                batch.requests.append(request)
                self._add(batch, request)
            yield batch

    def _run(self, batch: Batch) -> Batch:
        for request in batch.requests:
            self._add(batch, request)
        return batch

    def _add(self, batch: Batch, request: EntryRequest) -> None:
        state = self.state
        time_us = max(batch.time_us, state.last_time_us)
        entry = build_entry(request, _view(state, request), time_us)
        canonical = canonical_bytes(entry)
        outcome = apply_entry(entry, state)
        if isinstance(outcome, Rejection):
            self.tally.rejected += 1
            return
        state.prev_leaf_hash_hex = hashlib.sha256(b"\x00" + canonical).hexdigest()
        batch.lines.append(canonical + b"\n")
        self.tally.kinds[request.kind] = self.tally.kinds.get(request.kind, 0) + 1
        if outcome.hold_opened is not None:
            self.active_holds.append(outcome.seq)
        self.members_opened += [s["account"] for s in entry.get("open", ()) if s["lots"]]

    def _key(self) -> str:
        self._keys += 1
        return f"{self._keys:010d}"

    def _setup_requests(self) -> list[EntryRequest]:
        specs = [AccountSpec("coalition:cash:EUR", "EUR", overdraft=True)]
        specs.append(AccountSpec("coalition:breakage", "PTS", overdraft=True))
        for p in range(PARTNERS_COUNT):
            specs.append(AccountSpec(f"partner:p{p:02d}:issued", "PTS", overdraft=True))
            specs.append(AccountSpec(f"partner:p{p:02d}:redeemed", "PTS", overdraft=True))
            specs.append(AccountSpec(f"partner:p{p:02d}:settlement:EUR", "EUR", overdraft=True))
        return [
            EntryRequest("open", "coalition", f"setup-{i}", open_accounts=tuple(chunk))
            for i, chunk in enumerate(
                specs[i : i + OPENS_PER_ENTRY] for i in range(0, len(specs), OPENS_PER_ENTRY)
            )
        ]

    def _partner(self) -> str:
        return f"p{self.rng.randrange(PARTNERS_COUNT):02d}"

    def _next_request(self, time_us: int) -> EntryRequest:
        roll = self.rng.random()
        if roll < EARN or not self.members_opened:
            return self._earn(time_us)
        roll -= EARN
        if roll < SPEND + HOLD:
            member = self.rng.choice(self.members_opened)
            available = self.state.spendable_lots(member, time_us) - self.state.held_amount(
                member, time_us
            )
            if available <= 0:
                return self._earn(time_us)
            amount = self.rng.randint(1, min(available, 400))
            if roll < SPEND:
                return self._spend(member, amount)
            return EntryRequest(
                "hold",
                f"partner:{self._partner()}",
                self._key(),
                hold=HoldRequest(member, "PTS", amount, time_us + HOLD_LIFETIME_US),
            )
        roll -= SPEND + HOLD
        if roll < CAPTURE + VOID and self.active_holds:
            return self._close_hold(time_us, capture=roll < CAPTURE)
        return self._money()

    def _earn(self, time_us: int) -> EntryRequest:
        index = self.rng.randrange(self.members_count)
        member = f"member:m{index:07d}"
        opens: tuple[AccountSpec, ...] = ()
        if member not in self.state.accounts:
            opens = (AccountSpec(member, "PTS", lot_tracked=True),)
        partner = self._partner()
        amount = self.rng.randint(10, 500)
        expires_us = None
        if self.rng.random() < 0.8:
            expires_us = time_us + self.rng.randint(5, 90) * DAY_US
        return EntryRequest(
            "earn",
            f"partner:{partner}",
            self._key(),
            postings=(
                PostingRequest(f"partner:{partner}:issued", "PTS", -amount),
                PostingRequest(
                    member, "PTS", amount, lot_origin=partner, lot_expires_us=expires_us
                ),
            ),
            meta={"receipt": f"R{self.rng.randrange(10**8):08d}"},
            open_accounts=opens,
        )

    def _spend(self, member: str, amount: int) -> EntryRequest:
        partner = self._partner()
        return EntryRequest(
            "spend",
            f"partner:{partner}",
            self._key(),
            postings=(
                PostingRequest(member, "PTS", -amount),
                PostingRequest(f"partner:{partner}:redeemed", "PTS", amount),
            ),
            meta={"basket": f"B{self.rng.randrange(10**8):08d}"},
        )

    def _close_hold(self, time_us: int, *, capture: bool) -> EntryRequest:
        # Captures take the newest hold (still live), voids the oldest (maybe expired).
        hold_seq = self.active_holds.pop() if capture else self.active_holds.popleft()
        hold = self.state.holds[hold_seq]
        if not capture or not hold.reserves_at(time_us):
            return EntryRequest("void", "coalition", self._key(), void_hold_seq=hold_seq)
        amount = self.rng.randint(1, hold.amount)
        return EntryRequest(
            "capture",
            f"partner:{self._partner()}",
            self._key(),
            postings=(
                PostingRequest(hold.account, "PTS", -amount),
                PostingRequest(f"partner:{self._partner()}:redeemed", "PTS", amount),
            ),
            capture_hold_seq=hold_seq,
            capture_amount=amount,
        )

    def _money(self) -> EntryRequest:
        payer, payee = self.rng.sample(range(PARTNERS_COUNT), 2)
        cents = self.rng.randint(100, 5_000_00)
        fee = cents // 100
        return EntryRequest(
            "settle",
            "coalition",
            self._key(),
            postings=(
                PostingRequest(f"partner:p{payer:02d}:settlement:EUR", "EUR", -cents),
                PostingRequest(f"partner:p{payee:02d}:settlement:EUR", "EUR", cents - fee),
                PostingRequest("coalition:cash:EUR", "EUR", fee),
            ),
        )

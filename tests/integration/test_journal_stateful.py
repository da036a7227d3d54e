"""Random sequences of journal requests against PostgreSQL, checked against a plain model.

The machine opens accounts, earns, spends (lots picked by the ledger or named), places,
captures and voids holds, reverses entries, lets lots expire and breaks them, replays
references and sends requests that must be refused, alone or several in one batch. Every
outcome is predicted by ``_model`` (written apart from ``ledger.rules``) and compared with
the journal's answer; after every step the database must agree with the model, and the
online verifier must accept the database.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import psycopg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from ledger import reads
from ledger.journal import Appended, AppendResult, Journal
from ledger.rejections import Rejection
from ledger.requests import AccountSpec, EntryRequest, HoldRequest, LotTake, PostingRequest
from ledger.verify_db import verify_database
from tests.integration._model import (
    Accepted,
    Hold,
    Model,
    Outcome,
    Recorded,
    Refused,
    Replayed,
)

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
T0_US = 1_800_000_000_000_000  # 2027-01-15
VERIFY_EVERY_STEPS = 8

ACCOUNTS = {
    spec.account: spec
    for spec in (
        AccountSpec("issuer:a", "PTS", overdraft=True),
        AccountSpec("issuer:b", "PTS", overdraft=True),
        AccountSpec("sink", "PTS"),
        AccountSpec("breakage", "PTS"),
        AccountSpec("cash:EUR", "EUR", overdraft=True),
        AccountSpec("wallet:EUR", "EUR"),
        AccountSpec("member:1", "PTS", lot_tracked=True),
        AccountSpec("member:2", "PTS", lot_tracked=True),
        AccountSpec("member:3", "PTS", lot_tracked=True),
        AccountSpec("member:od", "PTS", overdraft=True, lot_tracked=True),
    )
}
BASE = ("issuer:a", "issuer:b", "sink", "breakage", "cash:EUR")
ISSUERS = ("issuer:a", "issuer:b")
LOT_ACCOUNTS = ("member:1", "member:2", "member:3", "member:od")
HOLDERS = (*LOT_ACCOUNTS, "wallet:EUR")  # accounts that earn, spend and hold
COUNTERPART = {"PTS": "sink", "EUR": "cash:EUR"}


_INVARIANT_QUERIES = {
    "unit_sums": "SELECT a.unit, sum(b.balance)::bigint FROM ledger_balance b"
    " JOIN ledger_account a USING (account) GROUP BY a.unit",
    "balances": "SELECT account, balance FROM ledger_balance",
    "lots": "SELECT lot_id, account, origin, expires_us, amount_opened, remaining FROM ledger_lot",
    "holds": "SELECT hold_seq, account, amount, expires_us, status, closed_seq FROM ledger_hold",
    "head": "SELECT tree_size FROM ledger_chain",
    "counts": "SELECT (SELECT count(*) FROM ledger_entry), (SELECT count(*) FROM ledger_posting)",
}


# Operations carry small numbers that are resolved against the model when they run
# ("the n-th lot, modulo how many there are"; "this percentage of what the account may
# spend"), so that most drawn sequences do something and shrink to readable steps.
@dataclass(frozen=True)
class Open:
    account: int
    conflicting: bool  # reopen with other properties: account_exists


@dataclass(frozen=True)
class Earn:
    account: int
    issuer: int
    amount: int
    expires_days: int | None
    open_inline: bool  # open the account in the same entry


@dataclass(frozen=True)
class Spend:
    account: int
    percent: int  # of what the account may spend; above 100 overdraws
    debt: bool  # allow_debt: refused unless the account is a lot-tracked overdraft one


@dataclass(frozen=True)
class SpendNamed:
    account: int
    picks: tuple[int, ...]
    over: bool  # take one more than a lot holds
    foreign: bool  # name a lot of another account
    delta: int  # debit this much more (or less) than the lots named
    debt: bool


@dataclass(frozen=True)
class Place:
    account: int
    percent: int
    expires_days: int  # 0: expires as it is placed, which is refused


@dataclass(frozen=True)
class Capture:
    pick: int
    how: str  # full, partial, over (the hold), mismatch (postings debit another amount)


@dataclass(frozen=True)
class Clawback:
    account: int
    percent: int  # of the balance, taken back even beyond the lots: the account owes the rest


@dataclass(frozen=True)
class Void:
    pick: int
    unknown: bool


@dataclass(frozen=True)
class Reverse:
    pick: int
    bogus: bool  # corrects an entry that does not precede it


@dataclass(frozen=True)
class Expire:
    account: int
    extra: int
    name_unexpired: bool


@dataclass(frozen=True)
class Resend:
    pick: int
    mutate: bool


@dataclass(frozen=True)
class Invalid:
    what: str
    amount: int


Op = (
    Open
    | Earn
    | Spend
    | SpendNamed
    | Clawback
    | Place
    | Capture
    | Void
    | Reverse
    | Expire
    | Resend
    | Invalid
)

small = st.integers(0, 31)
rarely = st.sampled_from((False, False, False, True))
holder = st.integers(0, len(HOLDERS) - 1)
lot_holder = st.integers(0, len(LOT_ACCOUNTS) - 1)
percent = st.integers(1, 130)
opens = st.builds(Open, holder, rarely)
earns = st.builds(
    Earn, holder, st.integers(0, 1), st.integers(1, 200), st.none() | st.integers(1, 4), rarely
)
spends = st.builds(Spend, holder, percent, rarely)
named_spends = st.builds(
    SpendNamed,
    lot_holder,
    st.lists(small, min_size=1, max_size=3).map(tuple),
    rarely,
    rarely,
    st.sampled_from((0, 0, 0, 1, -1)),
    rarely,
)
places = st.builds(Place, holder, percent, st.sampled_from((1, 2, 3, 0, 1, 2, 3)))
captures = st.builds(
    Capture, small, st.sampled_from(("full", "full", "partial", "partial", "over", "mismatch"))
)
# Mostly the overdraft account that may owe; the others must refuse allow_debt.
clawbacks = st.builds(Clawback, st.sampled_from((3, 3, 3, 0, 1, 2)), st.integers(50, 200))
voids = st.builds(Void, small, rarely)
reverses = st.builds(Reverse, small, rarely)
expires = st.builds(Expire, lot_holder, st.sampled_from((0, 0, 1)), rarely)
resends = st.builds(Resend, small, st.booleans())
invalids = st.builds(
    Invalid,
    st.sampled_from(("unbalanced", "unknown_account", "wrong_unit", "overdraw", "zero", "units")),
    st.integers(2, 100),
)
any_op = st.one_of(
    opens,
    earns,
    earns,
    spends,
    named_spends,
    clawbacks,
    places,
    captures,
    voids,
    reverses,
    expires,
    resends,
    invalids,
)


class JournalMachine(RuleBasedStateMachine):
    database_url: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        # Durability is not under test; waiting for each commit's flush would be most of the
        # run time (and of the time spent shrinking a failure).
        self.conn = psycopg.connect(
            self.database_url, autocommit=True, options="-c synchronous_commit=off"
        )
        _empty_every_table(self.conn)
        self.model = Model(T0_US)
        self.journal = Journal(clock_us=lambda: self.model.now_us)
        self.sent: list[EntryRequest] = []
        self.leaf_hashes: dict[int, bytes] = {}
        self.keys = 0
        self.invariant_runs = 0

    def teardown(self) -> None:
        try:
            if sys.exc_info()[0] is None:  # a failing step already tells its own story
                assert verify_database(self.conn).tree_size == self.model.size
        finally:
            self.conn.close()

    # -- rules ---------------------------------------------------------------------------

    @initialize(
        holders=st.sets(st.sampled_from(HOLDERS), min_size=3),
        earnings=st.lists(earns, min_size=1, max_size=6),
    )
    def open_accounts_and_earn(self, holders: set[str], earnings: list[Earn]) -> None:
        names = [*BASE, *sorted(holders)]
        request = self._request("open", open_accounts=tuple(ACCOUNTS[n] for n in names))
        self._send([request], [self.model.submit(request)])
        self._run(list(earnings))

    @rule(op=opens)
    def open_account(self, op: Open) -> None:
        self._run([op])

    @rule(op=earns)
    def earn(self, op: Earn) -> None:
        self._run([op])

    @rule(op=spends)
    def spend(self, op: Spend) -> None:
        self._run([op])

    @rule(op=named_spends)
    def spend_named_lots(self, op: SpendNamed) -> None:
        self._run([op])

    @rule(op=clawbacks)
    def claw_back(self, op: Clawback) -> None:
        self._run([op])

    @rule(op=places)
    def place_hold(self, op: Place) -> None:
        self._run([op])

    @rule(place=places, settle=st.one_of(captures, voids), same_batch=st.booleans())
    def hold_then_settle(self, place: Place, settle: Capture | Void, same_batch: bool) -> None:
        newest = dataclasses.replace(settle, pick=-1)
        if same_batch:
            self._run([place, newest])
        else:
            self._run([place])
            self._run([newest])

    @rule(op=captures)
    def capture_hold(self, op: Capture) -> None:
        self._run([op])

    @rule(op=voids)
    def void_hold(self, op: Void) -> None:
        self._run([op])

    @rule(op=reverses)
    def reverse(self, op: Reverse) -> None:
        self._run([op])

    @rule(op=expires, wait=st.sampled_from((True, True, True, False)))
    def break_expired(self, op: Expire, wait: bool) -> None:
        if wait:
            self.advance_to_next_expiry()
        self._run([op])

    @rule(op=resends)
    def resend(self, op: Resend) -> None:
        self._run([op])

    @rule(op=invalids)
    def invalid(self, op: Invalid) -> None:
        self._run([op])

    @rule(ops=st.lists(any_op, min_size=2, max_size=5))
    def batch(self, ops: list[Op]) -> None:
        self._run(ops)

    @rule(hours=st.sampled_from((1, 12, 24, 48, 72)))
    def advance_clock(self, hours: int) -> None:
        self.model.now_us += hours * HOUR_US

    @rule()
    def advance_to_next_expiry(self) -> None:
        """Stop the clock exactly on the next expiry of a lot or hold: expired from then on."""
        book, now_us = self.model.book, self.model.now_us
        instants = [lot.expires_us for lot in book.lots.values() if lot.expires_us is not None]
        instants += [hold.expires_us for hold in book.holds.values()]
        later = [instant for instant in instants if instant > now_us]
        if later:
            self.model.now_us = min(later)

    # -- invariant -----------------------------------------------------------------------

    @invariant()
    def database_agrees_with_the_model(self) -> None:
        # One invariant (not one per check) keeps a failing run's printed steps short.
        rows = self._fetch_all(_INVARIANT_QUERIES)
        book = self.model.book
        assert {unit: total for unit, total in rows["unit_sums"] if total != 0} == {}
        balances = dict(rows["balances"])
        assert balances == book.balances
        lots = {lot_id: tuple(rest) for lot_id, *rest in rows["lots"]}
        assert all(row[-1] >= 0 for row in lots.values()), lots
        assert lots == {
            lot.lot_id: (lot.account, lot.origin, lot.expires_us, lot.opened, lot.remaining)
            for lot in book.lots.values()
        }
        for name, spec in book.accounts.items():
            if spec.lot_tracked:  # what its lots hold, less what it owes, is its balance
                in_lots = sum(row[-1] for row in lots.values() if row[0] == name)
                assert in_lots - book.debts[name] == balances[name], name
        holds = {hold_seq: tuple(rest) for hold_seq, *rest in rows["holds"]}
        assert holds == {
            h.seq: (h.account, h.amount, h.expires_us, h.status, h.closed_seq)
            for h in book.holds.values()
        }
        assert rows["head"] == ([(self.model.size,)] if self.model.size else [])
        assert rows["counts"] == [(self.model.size, self.model.postings)]
        self.invariant_runs += 1
        if self.invariant_runs % VERIFY_EVERY_STEPS == 0:  # the slower checks, now and then
            self._check_balance_reads()
            assert reads.head(self.conn).tree_size == self.model.size
            assert verify_database(self.conn).tree_size == self.model.size

    def _fetch_all(self, queries: dict[str, str]) -> dict[str, list[tuple[Any, ...]]]:
        """Run the queries in one round trip: the check runs after every step."""
        cursors = {name: self.conn.cursor() for name in queries}
        with self.conn.pipeline():
            for name, sql in queries.items():
                cursors[name].execute(sql)
        return {name: cursor.fetchall() for name, cursor in cursors.items()}

    def _check_balance_reads(self) -> None:
        for name, balance in self.model.book.balances.items():
            read = reads.balance(self.conn, name, self.model.now_us)
            held = self.model.book.held(name, self.model.now_us)
            assert read is not None and (read.balance, read.held) == (balance, held), name

    # -- running requests ----------------------------------------------------------------

    def _run(self, ops: list[Op]) -> None:
        requests, expected = [], []
        for op in ops:  # one by one: a request may build on what an earlier one did
            requests.append(self._build(op))
            expected.append(self.model.submit(requests[-1]))
            if isinstance(op, Invalid):
                assert isinstance(expected[-1], Refused), f"generator made a valid {op}"
        self._send(requests, expected)

    def _send(self, requests: list[EntryRequest], expected: list[Outcome]) -> None:
        self.sent += requests
        results = self.journal.append(self.conn, requests)
        assert len(results) == len(requests)
        for request, want, got in zip(requests, expected, results, strict=True):
            self._compare(request, want, got)

    def _compare(self, request: EntryRequest, want: Outcome, got: AppendResult) -> None:
        context = f"{request}\nmodel: {want}\nledger: {got}"
        if isinstance(want, Refused):
            assert isinstance(got, Rejection) and got.code is want.code, context
            return
        assert isinstance(got, Appended), context
        assert got.seq == want.seq, context
        if isinstance(want, Replayed):
            assert got.replayed and got.leaf_hash == self.leaf_hashes[want.seq], context
            return
        assert not got.replayed and got.time_us == self.model.now_us, context
        self.leaf_hashes[got.seq] = got.leaf_hash
        self._compare_lots(want, context)

    def _compare_lots(self, want: Accepted, context: str) -> None:
        """The lots the ledger wrote into the entry are the ones the model picked."""
        stored = reads.entry(self.conn, want.seq)
        assert stored is not None
        postings = json.loads(stored.canonical)["postings"]
        for index, taken in want.taken.items():
            got = [(t["lot"], t["amount"]) for t in postings[index]["lots"]]
            assert got == taken, f"posting {index} lots\n{context}"
        for index, size in want.opened.items():
            assert postings[index]["lot"]["amount"] == size, f"posting {index} lot\n{context}"

    def _request(self, kind: str, **fields: Any) -> EntryRequest:
        self.keys += 1
        return EntryRequest(kind, "stateful", f"k{self.keys}", **fields)

    # -- turning operations into requests ------------------------------------------------

    def _build(self, op: Op) -> EntryRequest:
        builder = getattr(self, f"_build_{type(op).__name__.lower()}")
        request: EntryRequest = builder(op)
        return request

    def _build_open(self, op: Open) -> EntryRequest:
        spec = ACCOUNTS[HOLDERS[op.account]]
        if op.conflicting and spec.account in self.model.book.accounts:
            spec = dataclasses.replace(spec, overdraft=not spec.overdraft)
        return self._request("open", open_accounts=(spec,))

    def _build_earn(self, op: Earn) -> EntryRequest:
        spec = ACCOUNTS[HOLDERS[op.account]]
        inline = (spec,) if op.open_inline else ()
        if spec.unit == "EUR":
            source = PostingRequest("cash:EUR", "EUR", -op.amount)
            target = PostingRequest(spec.account, "EUR", op.amount)
            return self._request("top-up", postings=(source, target), open_accounts=inline)
        origin = ISSUERS[op.issuer]
        expires_us = None
        if op.expires_days is not None:
            expires_us = self.model.now_us + op.expires_days * DAY_US
        source = PostingRequest(origin, "PTS", -op.amount)
        target = PostingRequest(
            spec.account, "PTS", op.amount, lot_origin=origin, lot_expires_us=expires_us
        )
        return self._request("earn", postings=(source, target), open_accounts=inline)

    def _build_spend(self, op: Spend) -> EntryRequest:
        spec = ACCOUNTS[self._holder_with_funds(op.account)]
        amount = self._percent_of_available(spec.account, op.percent)
        postings = _transfer(spec, COUNTERPART[spec.unit], amount, debt=op.debt)
        return self._request("spend", postings=postings)

    def _build_spendnamed(self, op: SpendNamed) -> EntryRequest:
        account = LOT_ACCOUNTS[op.account]
        now_us = self.model.now_us
        book = self.model.book
        own = [lot for lot in book.lots_of(account) if lot.remaining > 0]
        takes: list[LotTake] = []
        for n, pick in enumerate(op.picks):
            if not own:
                break
            lot = own[pick % len(own)]
            if lot.expired(now_us) and pick % 4:  # mostly skip expired lots; they are refused
                continue
            amount = lot.remaining if pick % 2 else max(1, lot.remaining // 2)
            takes.append(LotTake(lot.lot_id, amount + (1 if op.over and n == 0 else 0)))
        if op.foreign:
            others = [lot.lot_id for lot in book.lots.values() if lot.account != account]
            foreign = others[op.picks[0] % len(others)] if others else "999999:9"
            takes.insert(0, LotTake(foreign, 1))
        amount = max(1, sum(t.amount for t in takes) + op.delta)
        postings = _transfer(ACCOUNTS[account], "sink", amount, tuple(takes), op.debt)
        return self._request("spend", postings=postings)

    def _build_place(self, op: Place) -> EntryRequest:
        spec = ACCOUNTS[self._holder_with_funds(op.account)]
        expires_us = self.model.now_us + op.expires_days * DAY_US
        amount = self._percent_of_available(spec.account, op.percent)
        return self._request(
            "authorise", hold=HoldRequest(spec.account, spec.unit, amount, expires_us)
        )

    def _holder_with_funds(self, index: int) -> str:
        """The index-th holder, or the next one that has something to spend."""
        now_us = self.model.now_us
        for n in range(len(HOLDERS)):
            name = HOLDERS[(index + n) % len(HOLDERS)]
            if self.model.book.available(name, now_us) > 0:
                return name
        return HOLDERS[index]

    def _percent_of_available(self, account: str, percent: int) -> int:
        available = self.model.book.available(account, self.model.now_us)
        return max(1, max(0, available) * percent // 100)

    def _pick_hold(self, pick: int) -> Hold | None:
        """Mostly a hold still open (and not yet expired); now and then any hold."""
        holds = list(self.model.book.holds.values())
        if pick < 0:  # the newest
            return max(holds, key=lambda h: h.seq) if holds else None
        now_us = self.model.now_us
        open_holds = [h for h in holds if h.status == "active" and h.expires_us > now_us]
        if open_holds and pick % 4:
            holds = open_holds
        return holds[pick % len(holds)] if holds else None

    def _build_capture(self, op: Capture) -> EntryRequest:
        hold = self._pick_hold(op.pick)
        if hold is None:
            seq = self.model.size + op.pick % 3  # no entry there yet, so surely no hold
            return self._request(
                "capture",
                capture_hold_seq=seq,
                capture_amount=1,
                postings=_transfer(ACCOUNTS["member:1"], "sink", 1),
            )
        amount = {
            "full": hold.amount,
            "partial": 1 + op.pick % hold.amount,
            "over": hold.amount + 1,
            "mismatch": hold.amount,
        }[op.how]
        debit = amount - 1 if op.how == "mismatch" and amount > 1 else amount
        debit += 1 if op.how == "mismatch" and amount == 1 else 0
        spec = ACCOUNTS[hold.account]
        return self._request(
            "capture",
            capture_hold_seq=hold.seq,
            capture_amount=amount,
            postings=_transfer(spec, COUNTERPART[spec.unit], debit),
        )

    def _build_void(self, op: Void) -> EntryRequest:
        hold = self._pick_hold(op.pick)
        if op.unknown or hold is None:
            return self._request("void", void_hold_seq=self.model.size + op.pick % 3)
        return self._request("void", void_hold_seq=hold.seq)

    def _build_clawback(self, op: Clawback) -> EntryRequest:
        account = LOT_ACCOUNTS[op.account]
        owed = max(1, self.model.book.balances.get(account, 0) * op.percent // 100)
        debit = PostingRequest(account, "PTS", -owed, allow_debt=True)
        return self._request("clawback", postings=(debit, PostingRequest("issuer:a", "PTS", owed)))

    def _build_reverse(self, op: Reverse) -> EntryRequest:
        reversible = [r for r in self.model.accepted if r.request.postings]
        if op.bogus or not reversible:
            return self._request("reversal", corrects_seq=self.model.size + op.pick % 3)
        original = reversible[op.pick % len(reversible)]
        postings = _negation(original, self.model)
        return self._request("reversal", postings=postings, corrects_seq=original.outcome.seq)

    def _build_expire(self, op: Expire) -> EntryRequest:
        now_us = self.model.now_us
        lots = [lot for lot in self.model.book.lots.values() if lot.remaining > 0]
        with_expired = sorted({lot.account for lot in lots if lot.expired(now_us)})
        account = LOT_ACCOUNTS[op.account]
        if with_expired and account not in with_expired:
            account = with_expired[op.account % len(with_expired)]
        lots = [lot for lot in lots if lot.account == account]
        unexpired = [lot for lot in lots if not lot.expired(now_us)]
        if op.name_unexpired and unexpired:
            take = (LotTake(unexpired[0].lot_id, 1),)
            debit = PostingRequest(account, "PTS", -1, lots=take, take_expired=True)
            return self._request("expire", postings=(debit, PostingRequest("breakage", "PTS", 1)))
        amount = sum(lot.remaining for lot in lots if lot.expired(now_us)) + op.extra
        amount = max(1, amount)
        debit = PostingRequest(account, "PTS", -amount, take_expired=True)
        credit = PostingRequest("breakage", "PTS", amount)
        return self._request("expire", postings=(debit, credit))

    def _build_resend(self, op: Resend) -> EntryRequest:
        if not self.sent:
            return self._request("fact")
        request = self.sent[op.pick % len(self.sent)]
        if op.mutate:
            return dataclasses.replace(request, meta={"variant": self.keys + 1})
        return request

    def _build_invalid(self, op: Invalid) -> EntryRequest:
        n = op.amount
        pts = "PTS"
        postings = {
            "unbalanced": (PostingRequest("issuer:a", pts, -n), PostingRequest("sink", pts, n - 1)),
            "unknown_account": (
                PostingRequest("issuer:a", pts, -n),
                PostingRequest("nobody", pts, n),
            ),
            "wrong_unit": (PostingRequest("cash:EUR", pts, -n), PostingRequest("sink", pts, n)),
            "zero": (PostingRequest("issuer:a", pts, 0), PostingRequest("sink", pts, 0)),
            "units": (PostingRequest("cash:EUR", "EUR", -n), PostingRequest("sink", pts, n)),
            "overdraw": self._overdraw_wallet(n),
        }[op.what]
        return self._request("invalid", postings=postings)

    def _overdraw_wallet(self, n: int) -> tuple[PostingRequest, ...]:
        book = self.model.book
        wallet = "wallet:EUR"
        available = book.balances.get(wallet, 0) - book.held(wallet, self.model.now_us)
        return _transfer(ACCOUNTS[wallet], "cash:EUR", max(0, available) + n)


def _transfer(
    source: AccountSpec,
    target: str,
    amount: int,
    lots: tuple[LotTake, ...] | None = None,
    debt: bool = False,
) -> tuple[PostingRequest, ...]:
    return (
        PostingRequest(source.account, source.unit, -amount, lots=lots, allow_debt=debt),
        PostingRequest(target, source.unit, amount),
    )


def _negation(original: Recorded, model: Model) -> tuple[PostingRequest, ...]:
    """Postings that undo ``original``: lots it took are restored, lots it opened taken."""
    out: list[PostingRequest] = []
    seq = original.outcome.seq
    for index, posting in enumerate(original.request.postings):
        spec = ACCOUNTS[posting.account]
        if not spec.lot_tracked:
            out.append(PostingRequest(posting.account, posting.unit, -posting.amount))
        elif posting.amount > 0:
            if posting.lots is not None:  # it restored lots: take them again
                lots = posting.lots
            else:
                size = original.outcome.opened[index]
                lots = (LotTake(f"{seq}:{index}", size),) if size else ()
            first = model.book.lots.get(lots[0].lot_id) if lots else None
            expired = first is not None and first.expired(model.now_us)
            # A lot smaller than its credit means the credit repaid a debt: owe it again.
            owes = sum(t.amount for t in lots) < posting.amount
            out.append(
                PostingRequest(
                    posting.account,
                    "PTS",
                    -posting.amount,
                    lots=lots,
                    take_expired=expired,
                    allow_debt=owes,
                )
            )
        else:
            taken = original.outcome.taken[index]
            restored = sum(amount for _, amount in taken)
            if restored:
                lots = tuple(LotTake(lot_id, amount) for lot_id, amount in taken)
                out.append(PostingRequest(posting.account, "PTS", restored, lots=lots))
            if -posting.amount > restored:  # the part it overdrew comes back as a new lot
                out.append(
                    PostingRequest(
                        posting.account, "PTS", -posting.amount - restored, lot_origin="reversal"
                    )
                )
    return tuple(out)


# Configuration a migration seeds (the card index's key, migration 0009; the partition
# size and the default chain's first range, 0021): neither emptied nor expected empty.
# The ranges made stay made, as their partitions do: emptied, the next append would make
# again a partition that exists.
SEEDED_TABLES = (
    "alembic_version",
    "coalition_pii_key",
    "coalition_event_head",
    "ledger_partition_plan",
    "ledger_partition",
)


def _table_names(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        " AND NOT (tablename = ANY(%s)) ORDER BY tablename",
        (list(SEEDED_TABLES),),
    ).fetchall()
    return [name for (name,) in rows]


def _empty_every_table(conn: psycopg.Connection[Any]) -> None:
    """Bring the database back to its freshly migrated (empty) state between examples.

    Cloning a database per example costs most of a second, which makes shrinking a
    failure take many minutes; emptying the tables takes milliseconds. The append-only
    triggers would refuse the DELETE, so this test (connected as a superuser) skips them
    for its own transaction, exactly what the application role can never do.
    """
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        for name in _table_names(conn):
            conn.execute(f'DELETE FROM "{name}"')


def test_journal_agrees_with_the_model(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        # Emptying tables only reproduces a fresh database if a fresh one is empty.
        for name in _table_names(conn):
            assert conn.execute(f'SELECT count(*) FROM "{name}"').fetchone() == (0,), name
    JournalMachine.database_url = db_url
    run_state_machine_as_test(
        JournalMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=40,
            deadline=None,
            report_multiple_bugs=False,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )

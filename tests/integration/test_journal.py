"""The write path against PostgreSQL: rules, rejections, lots, holds, idempotency."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from ledger import reads
from ledger.journal import Appended, Journal
from ledger.rejections import Rejection
from ledger.rejections import RejectionCode as Code
from ledger.requests import AccountSpec, EntryRequest, HoldRequest, LotTake, PostingRequest

DAY_US = 86_400_000_000
T0 = 1_800_000_000_000_000  # 2027-01-15


class Clock:
    def __init__(self) -> None:
        self.now_us = T0

    def __call__(self) -> int:
        return self.now_us


@pytest.fixture()
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def journal(conn: psycopg.Connection[Any], clock: Clock) -> Journal:
    j = Journal(clock_us=clock)
    opened = j.append(
        conn,
        [
            EntryRequest(
                "open",
                "test",
                "open-accounts",
                open_accounts=(
                    AccountSpec("issuer:a", "PTS", overdraft=True),
                    AccountSpec("issuer:b", "PTS", overdraft=True),
                    AccountSpec("member:1", "PTS", lot_tracked=True),
                    AccountSpec("member:2", "PTS", lot_tracked=True),
                    AccountSpec("sink", "PTS", overdraft=True),
                    AccountSpec("cash:EUR", "EUR", overdraft=True),
                    AccountSpec("wallet:EUR", "EUR"),
                ),
            )
        ],
    )
    assert isinstance(opened[0], Appended)
    return j


_counter = iter(range(1_000_000))


def earn(member: str, amount: int, origin: str = "a", expires_us: int | None = None) -> Any:
    return EntryRequest(
        "earn",
        "test",
        f"earn-{next(_counter)}",
        postings=(
            PostingRequest(f"issuer:{origin}", "PTS", -amount),
            PostingRequest(member, "PTS", amount, lot_origin=origin, lot_expires_us=expires_us),
        ),
    )


def spend(member: str, amount: int, key: str | None = None, **kw: Any) -> EntryRequest:
    return EntryRequest(
        "spend",
        "test",
        key or f"spend-{next(_counter)}",
        postings=(
            PostingRequest(member, "PTS", -amount, **kw),
            PostingRequest("sink", "PTS", amount),
        ),
    )


def one(journal: Journal, conn: psycopg.Connection[Any], request: EntryRequest) -> Any:
    [result] = journal.append(conn, [request])
    return result


def canonical(conn: psycopg.Connection[Any], seq: int) -> dict[str, Any]:
    stored = reads.entry(conn, seq)
    assert stored is not None
    parsed: dict[str, Any] = json.loads(stored.canonical)
    return parsed


def test_earn_opens_lot_and_spend_consumes_first_expiring_first(journal, conn, clock):
    late = one(journal, conn, earn("member:1", 100, "a", T0 + 30 * DAY_US))
    early = one(journal, conn, earn("member:1", 50, "b", T0 + 10 * DAY_US))
    never = one(journal, conn, earn("member:1", 10, "a", None))
    spent = one(journal, conn, spend("member:1", 70))
    assert isinstance(spent, Appended)
    taken = canonical(conn, spent.seq)["postings"][0]["lots"]
    assert taken == [
        {"lot": f"{early.seq}:1", "amount": 50},
        {"lot": f"{late.seq}:1", "amount": 20},
    ]
    remaining = {lot.lot_id: lot.remaining for lot in reads.lots(conn, "member:1")}
    assert remaining == {f"{late.seq}:1": 80, f"{never.seq}:1": 10}
    bal = reads.balance(conn, "member:1", clock.now_us)
    assert bal is not None and bal.balance == 90


def test_unbalanced_entry_is_rejected_and_writes_nothing(journal, conn):
    size_before = reads.head(conn).tree_size
    bad = EntryRequest(
        "x",
        "test",
        "unbalanced",
        postings=(
            PostingRequest("issuer:a", "PTS", -10),
            PostingRequest("sink", "PTS", 9),
        ),
    )
    result = one(journal, conn, bad)
    assert isinstance(result, Rejection) and result.code is Code.POSTINGS_MUST_BALANCE
    assert reads.head(conn).tree_size == size_before
    assert conn.execute("SELECT count(*) FROM ledger_posting").fetchone() == (0,)


@pytest.mark.parametrize(
    ("postings", "code"),
    [
        ((("nobody", "PTS", -1), ("sink", "PTS", 1)), Code.UNKNOWN_ACCOUNT),
        ((("cash:EUR", "PTS", -1), ("sink", "PTS", 1)), Code.UNIT_MISMATCH),
        ((("cash:EUR", "EUR", -5), ("sink", "PTS", 5)), Code.POSTINGS_MUST_BALANCE),
        ((("wallet:EUR", "EUR", -1), ("cash:EUR", "EUR", 1)), Code.INSUFFICIENT_BALANCE),
        ((("issuer:a", "PTS", -(2**53)), ("sink", "PTS", 2**53)), Code.AMOUNT_OUT_OF_RANGE),
        ((("issuer:a", "PTS", 0), ("sink", "PTS", 0)), Code.AMOUNT_OUT_OF_RANGE),
        ((("member:1", "PTS", -1), ("sink", "PTS", 1)), Code.INSUFFICIENT_BALANCE),
    ],
)
def test_each_rule_rejects_with_its_code(journal, conn, postings, code):
    request = EntryRequest(
        "x", "test", f"bad-{code}", postings=tuple(PostingRequest(*p) for p in postings)
    )
    result = one(journal, conn, request)
    assert isinstance(result, Rejection), result
    assert result.code is code


def test_balance_overflow_is_rejected_not_wrapped(journal, conn):
    big = 2**53 - 1
    first = EntryRequest(
        "x",
        "test",
        "big-1",
        postings=(PostingRequest("issuer:a", "PTS", -big), PostingRequest("sink", "PTS", big)),
    )
    assert isinstance(one(journal, conn, first), Appended)
    second = EntryRequest(
        "x",
        "test",
        "big-2",
        postings=(PostingRequest("issuer:b", "PTS", -1), PostingRequest("sink", "PTS", 1)),
    )
    result = one(journal, conn, second)
    assert isinstance(result, Rejection) and result.code is Code.BALANCE_OUT_OF_RANGE


def test_float_in_metadata_is_rejected(journal, conn):
    request = EntryRequest("x", "test", "float", meta={"rate": 1.5})
    result = one(journal, conn, request)
    assert isinstance(result, Rejection) and result.code is Code.INVALID_ENTRY


def test_rejected_entry_in_a_batch_does_not_stop_the_others(journal, conn):
    results = journal.append(conn, [earn("member:1", 5), spend("member:2", 1), earn("member:2", 7)])
    assert [type(r) for r in results] == [Appended, Rejection, Appended]
    assert results[2].seq == results[0].seq + 1  # no gap where the rejection was


def test_expired_lots_cannot_be_spent(journal, conn, clock):
    one(journal, conn, earn("member:1", 40, expires_us=T0 + DAY_US))
    clock.now_us = T0 + 2 * DAY_US
    result = one(journal, conn, spend("member:1", 10))
    assert isinstance(result, Rejection) and result.code is Code.INSUFFICIENT_BALANCE
    expired = EntryRequest(
        "expire",
        "test",
        "expire-1",
        postings=(
            PostingRequest("member:1", "PTS", -40, take_expired=True),
            PostingRequest("sink", "PTS", 40),
        ),
    )
    assert isinstance(one(journal, conn, expired), Appended)
    assert reads.lots(conn, "member:1") == []


def test_named_expired_lot_is_rejected_for_a_spend(journal, conn, clock):
    lot = one(journal, conn, earn("member:1", 40, expires_us=T0 + DAY_US))
    clock.now_us = T0 + 2 * DAY_US
    result = one(journal, conn, spend("member:1", 10, lots=(LotTake(f"{lot.seq}:1", 10),)))
    assert isinstance(result, Rejection) and result.code is Code.LOT_EXPIRED


def test_hold_reserves_then_partial_capture_releases_the_rest(journal, conn, clock):
    one(journal, conn, earn("member:1", 100))
    hold = one(
        journal,
        conn,
        EntryRequest(
            "authorise",
            "test",
            "auth-1",
            hold=HoldRequest("member:1", "PTS", 80, clock.now_us + DAY_US),
        ),
    )
    assert isinstance(hold, Appended)
    bal = reads.balance(conn, "member:1", clock.now_us)
    assert bal is not None and (bal.balance, bal.held, bal.available) == (100, 80, 20)
    too_much = one(journal, conn, spend("member:1", 21))
    assert isinstance(too_much, Rejection) and too_much.code is Code.INSUFFICIENT_BALANCE
    over = EntryRequest(
        "capture",
        "test",
        "cap-over",
        capture_hold_seq=hold.seq,
        capture_amount=81,
        postings=(PostingRequest("member:1", "PTS", -81), PostingRequest("sink", "PTS", 81)),
    )
    result = one(journal, conn, over)
    assert isinstance(result, Rejection) and result.code is Code.CAPTURE_EXCEEDS_HOLD
    capture = EntryRequest(
        "capture",
        "test",
        "cap-1",
        capture_hold_seq=hold.seq,
        capture_amount=60,
        postings=(PostingRequest("member:1", "PTS", -60), PostingRequest("sink", "PTS", 60)),
    )
    assert isinstance(one(journal, conn, capture), Appended)
    bal = reads.balance(conn, "member:1", clock.now_us)
    assert bal is not None and (bal.balance, bal.held, bal.available) == (40, 0, 40)
    again = EntryRequest("void", "test", "void-1", void_hold_seq=hold.seq)
    result = one(journal, conn, again)
    assert isinstance(result, Rejection) and result.code is Code.HOLD_NOT_ACTIVE


def test_hold_times_out_and_cannot_be_captured(journal, conn, clock):
    one(journal, conn, earn("member:1", 100))
    hold = one(
        journal,
        conn,
        EntryRequest(
            "authorise",
            "test",
            "auth-2",
            hold=HoldRequest("member:1", "PTS", 100, clock.now_us + DAY_US),
        ),
    )
    clock.now_us += 2 * DAY_US
    bal = reads.balance(conn, "member:1", clock.now_us)
    assert bal is not None and bal.available == 100
    capture = EntryRequest(
        "capture",
        "test",
        "cap-late",
        capture_hold_seq=hold.seq,
        capture_amount=10,
        postings=(PostingRequest("member:1", "PTS", -10), PostingRequest("sink", "PTS", 10)),
    )
    result = one(journal, conn, capture)
    assert isinstance(result, Rejection) and result.code is Code.HOLD_EXPIRED


def test_same_reference_same_payload_returns_original(journal, conn):
    first = one(journal, conn, spend("member:1", 0 + 1, key="dup")) if False else None
    one(journal, conn, earn("member:1", 10))
    first = one(journal, conn, spend("member:1", 3, key="dup"))
    again = one(journal, conn, spend("member:1", 3, key="dup"))
    assert isinstance(first, Appended) and isinstance(again, Appended)
    assert again.replayed and (again.seq, again.leaf_hash) == (first.seq, first.leaf_hash)
    conflict = one(journal, conn, spend("member:1", 4, key="dup"))
    assert isinstance(conflict, Rejection) and conflict.code is Code.IDEMPOTENCY_CONFLICT
    assert reads.balance(conn, "member:1", T0).balance == 7


def test_balances_as_of_size_and_time(journal, conn, clock):
    a = one(journal, conn, earn("member:2", 10))
    clock.now_us += DAY_US
    b = one(journal, conn, earn("member:2", 5))
    assert reads.balance_as_of_size(conn, "member:2", a.seq) == 0
    assert reads.balance_as_of_size(conn, "member:2", a.seq + 1) == 10
    assert reads.balance_as_of_size(conn, "member:2", b.seq + 1) == 15
    assert reads.balance_as_of_time(conn, "member:2", T0 + DAY_US - 1) == 10
    assert reads.balance_as_of_time(conn, "member:2", T0 + DAY_US) == 15


def test_entry_without_postings_is_chained(journal, conn):
    fact = one(journal, conn, EntryRequest("terms", "test", "terms-1", meta={"rate": "0.01"}))
    assert isinstance(fact, Appended)
    assert canonical(conn, fact.seq)["postings"] == []
    assert reads.head(conn).head_leaf_hash == fact.leaf_hash


def test_reversal_restores_the_lots_it_took(journal, conn):
    lot = one(journal, conn, earn("member:1", 30, expires_us=T0 + 9 * DAY_US))
    spent = one(journal, conn, spend("member:1", 12))
    reverse = EntryRequest(
        "reversal",
        "test",
        "rev-1",
        corrects_seq=spent.seq,
        postings=(
            PostingRequest("sink", "PTS", -12),
            PostingRequest("member:1", "PTS", 12, lots=(LotTake(f"{lot.seq}:1", 12),)),
        ),
    )
    assert isinstance(one(journal, conn, reverse), Appended)
    [restored] = reads.lots(conn, "member:1")
    assert (restored.remaining, restored.expires_us) == (30, T0 + 9 * DAY_US)
    bad = EntryRequest("reversal", "test", "rev-2", corrects_seq=10_000)
    result = one(journal, conn, bad)
    assert isinstance(result, Rejection) and result.code is Code.CORRECTS_UNKNOWN_ENTRY


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entry SET kind = 'x'",
        "DELETE FROM ledger_entry",
        "TRUNCATE ledger_entry CASCADE",
        "UPDATE ledger_posting SET amount = 1",
        "DELETE FROM ledger_posting",
        "TRUNCATE ledger_posting",
        "UPDATE ledger_account SET overdraft = true",
        "DELETE FROM ledger_merkle_node",
    ],
)
def test_triggers_refuse_rewriting_the_journal(journal, conn, statement):
    one(journal, conn, earn("member:1", 3))
    one(journal, conn, earn("member:1", 3))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute(statement)


def test_debt_needs_an_overdraft_account_and_a_flagged_debit(conn, clock):
    journal = Journal(clock_us=clock)
    journal.append(
        conn,
        [
            EntryRequest(
                "open",
                "test",
                "open-debt",
                open_accounts=(
                    AccountSpec("issuer:x", "PTS", overdraft=True),
                    AccountSpec("holder:owes", "PTS", overdraft=True, lot_tracked=True),
                    AccountSpec("holder:never", "PTS", lot_tracked=True),
                ),
            )
        ],
    )
    one(journal, conn, earn_from("holder:owes", 40, "x"))
    unflagged = EntryRequest(
        "clawback",
        "test",
        "cb-1",
        postings=(
            PostingRequest("holder:owes", "PTS", -60),
            PostingRequest("issuer:x", "PTS", 60),
        ),
    )
    result = one(journal, conn, unflagged)
    assert isinstance(result, Rejection) and result.code is Code.INSUFFICIENT_BALANCE
    flagged_elsewhere = EntryRequest(
        "clawback",
        "test",
        "cb-2",
        postings=(
            PostingRequest("holder:never", "PTS", -1, allow_debt=True),
            PostingRequest("issuer:x", "PTS", 1),
        ),
    )
    result = one(journal, conn, flagged_elsewhere)
    assert isinstance(result, Rejection) and result.code is Code.INVALID_ENTRY
    flagged = EntryRequest(
        "clawback",
        "test",
        "cb-3",
        postings=(
            PostingRequest("holder:owes", "PTS", -60, allow_debt=True),
            PostingRequest("issuer:x", "PTS", 60),
        ),
    )
    assert isinstance(one(journal, conn, flagged), Appended)
    assert reads.balance(conn, "holder:owes", clock.now_us).balance == -20
    repay = one(journal, conn, earn_from("holder:owes", 30, "x"))
    [lot] = reads.lots(conn, "holder:owes")
    assert (lot.lot_id, lot.amount_opened) == (f"{repay.seq}:1", 10)  # 20 repaid the debt


def test_holds_bind_a_lot_tracked_overdraft_account(conn, clock):
    journal = Journal(clock_us=clock)
    journal.append(
        conn,
        [
            EntryRequest(
                "open",
                "test",
                "open-h",
                open_accounts=(
                    AccountSpec("issuer:x", "PTS", overdraft=True),
                    AccountSpec("holder:h", "PTS", overdraft=True, lot_tracked=True),
                ),
            )
        ],
    )
    one(journal, conn, earn_from("holder:h", 50, "x"))
    hold = EntryRequest(
        "authorise",
        "test",
        "auth-h",
        hold=HoldRequest("holder:h", "PTS", 40, clock.now_us + DAY_US),
    )
    assert isinstance(one(journal, conn, hold), Appended)
    spend = EntryRequest(
        "spend",
        "test",
        "spend-h",
        postings=(
            PostingRequest("holder:h", "PTS", -20),
            PostingRequest("issuer:x", "PTS", 20),
        ),
    )
    result = one(journal, conn, spend)
    assert isinstance(result, Rejection) and result.code is Code.INSUFFICIENT_BALANCE


def earn_from(account: str, amount: int, origin: str) -> EntryRequest:
    return EntryRequest(
        "earn",
        "test",
        f"earn-{next(_counter)}",
        postings=(
            PostingRequest(f"issuer:{origin}", "PTS", -amount),
            PostingRequest(account, "PTS", amount, lot_origin=origin),
        ),
    )


def test_after_append_runs_in_the_same_transaction(db_url, clock):
    seen: list[int] = []

    def keep(conn: psycopg.Connection[Any], appended: list[Any]) -> None:
        seen.extend(result.seq for _, result in appended)
        conn.execute("CREATE TABLE IF NOT EXISTS side (seq bigint PRIMARY KEY)")
        for _, result in appended:
            conn.execute("INSERT INTO side VALUES (%s)", (result.seq,))

    journal = Journal(clock_us=clock, after_append=keep)
    with psycopg.connect(db_url, autocommit=True) as conn:
        first = journal.append(
            conn, [EntryRequest("fact", "t", "f1"), EntryRequest("fact", "t", "f1")]
        )
        assert seen == [first[0].seq]  # the replayed duplicate is not passed on
        # The read model already holds the row the next entry (seq 1) would add, so the
        # hook fails; the journal must roll back with it.
        conn.execute("INSERT INTO side VALUES (1)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            journal.append(conn, [EntryRequest("fact", "t", "f2")])
        assert reads.head(conn).tree_size == 1

"""Journal.append_stream: batch n+1 is read under batch n's lock and judged while n is
written and committed. Each test checks that what it judged on was true at its commit:
the state batch n left (balances, lots, holds, corrections of n's entries, references),
a writer of another connection that came in between (the head check judges again), a
guard reading a table batch n's projection wrote (read under n+1's own lock), and a
batch the database refuses whole (the next is judged again, from the true state)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import pytest

from ledger import reads
from ledger.group_commit import GroupCommitter
from ledger.journal import Appended, AppendResult, Journal
from ledger.rejections import Rejection
from ledger.rejections import RejectionCode as Code
from ledger.requests import EntryRequest, LotTake, PostingRequest
from ledger.state import State
from ledger.verify_db import verify_database
from tests.integration._journal_helpers import (
    DAY_US,
    T0_US,
    Clock,
    earn,
    hold,
    open_accounts,
    transfer,
)

Conn = psycopg.Connection[Any]
Outcome = list[AppendResult] | BaseException


@pytest.fixture()
def conn(db_url: str) -> Iterator[Conn]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


def stream(
    journal: Journal,
    conn: Conn,
    batches: list[list[EntryRequest]],
    before_take: Callable[[int], None] | None = None,
) -> list[tuple[list[EntryRequest], Outcome]]:
    """Stream ``batches``, all available at once (so each next one is judged ahead)."""
    queue = list(batches)
    outcomes: list[tuple[list[EntryRequest], Outcome]] = []
    taken = 0

    def take(wait: bool) -> list[EntryRequest] | None:
        nonlocal taken
        if before_take is not None:
            before_take(taken)
        taken += 1
        return queue.pop(0) if queue else None

    def done(batch: Sequence[EntryRequest], outcome: Outcome) -> None:
        outcomes.append((list(batch), outcome))

    assert journal.append_stream(conn, take, done) == []
    return outcomes


def results(outcome: Outcome) -> list[AppendResult]:
    assert not isinstance(outcome, BaseException), outcome
    return outcome


def codes(outcome: Outcome) -> list[str]:
    return ["ok" if isinstance(r, Appended) else r.code.value for r in results(outcome)]


def test_each_batch_sees_what_the_one_before_left(conn: Conn) -> None:
    """Balances, lots opened, lots taken, a hold placed, a reference, and a correction of
    an entry of the batch before: all from the state it carries, not yet in the database."""
    clock = Clock()
    journal = Journal(clock_us=clock)
    [opened] = journal.append(conn, [open_accounts()])
    assert isinstance(opened, Appended)
    batches = [
        [earn("member:1", 100, "e1", "a", T0_US + 30 * DAY_US), earn("member:2", 10, "e2")],
        # The lot of e1 is first-expiring; the hold reserves 5 of member:2's 10.
        [transfer("member:1", "sink", "PTS", 60, "s1"), hold("member:2", 5, T0_US + DAY_US, "h")],
        [
            transfer("member:1", "sink", "PTS", 41, "s2"),  # 40 left: refused
            transfer("member:2", "sink", "PTS", 6, "s3"),  # 5 available: refused
            transfer("member:1", "sink", "PTS", 60, "s1"),  # a retry: replayed
            EntryRequest(  # gives back 10 of the 60 that s1 took, to its lot
                "reversal",
                "test",
                "r1",
                corrects_seq=3,
                postings=(
                    PostingRequest("sink", "PTS", -10),
                    PostingRequest("member:1", "PTS", 10, lots=(LotTake("1:1", 10),)),
                ),
            ),
        ],
        [
            transfer("member:1", "sink", "PTS", 50, "s4"),
            EntryRequest(  # 61 given back of the 60 s1 took: the correction bound holds
                "reversal",
                "test",
                "r2",
                corrects_seq=3,
                postings=(
                    PostingRequest("sink", "PTS", -51),
                    PostingRequest("member:1", "PTS", 51, lots=(LotTake("1:1", 51),)),
                ),
            ),
        ],
    ]
    outcomes = stream(journal, conn, batches)
    assert [codes(o) for _, o in outcomes] == [
        ["ok", "ok"],
        ["ok", "ok"],
        [Code.INSUFFICIENT_BALANCE.value, Code.INSUFFICIENT_BALANCE.value, "ok", "ok"],
        ["ok", Code.CORRECTION_EXCEEDS_ORIGINAL.value],
    ]
    replayed = results(outcomes[2][1])[2]
    assert isinstance(replayed, Appended) and replayed.replayed and replayed.seq == 3
    assert reads.balance(conn, "member:1", T0_US) is not None
    assert reads.balance(conn, "member:1", T0_US).available == 0  # type: ignore[union-attr]
    assert verify_database(conn).tree_size == 7


def test_a_writer_between_two_batches_makes_the_next_judged_again(db_url: str, conn: Conn) -> None:
    """Batch 2 is read under batch 1's lock; another connection's spend, waiting on the
    head, commits between the two. Batch 2's transaction finds the head moved and judges
    again: the second spend of the same 100 is refused."""
    clock = Clock()
    journal = Journal(clock_us=clock)
    journal.append(conn, [open_accounts()])
    journal.append(conn, [transfer("cash:EUR", "wallet:EUR", "EUR", 100, "fund")])
    other: list[AppendResult] = []

    def spend_elsewhere() -> None:
        with psycopg.connect(db_url, autocommit=True) as c2:
            other.extend(Journal(clock_us=clock).append(c2, [_spend("other")]))

    writer = threading.Thread(target=spend_elsewhere)

    def before_take(taken: int) -> None:
        if taken == 1:  # batch 1 holds the lock: the other writer queues behind it
            writer.start()
            _wait_for_lock_waiter(db_url)

    outcomes = stream(
        journal,
        conn,
        [[transfer("cash:EUR", "sink", "PTS", 1, "unrelated")], [_spend("ours")]],
        before_take,
    )
    writer.join()
    assert codes([other[0]]) == ["ok"]
    # "unrelated" has a unit mismatch (cash:EUR holds EUR): refused, changes nothing
    assert codes(outcomes[0][1]) == [Code.UNIT_MISMATCH.value]
    assert codes(outcomes[1][1]) == [Code.INSUFFICIENT_BALANCE.value]
    assert verify_database(conn).tree_size == 3


def test_a_writer_between_two_batches_that_both_append(db_url: str, conn: Conn) -> None:
    clock = Clock()
    journal = Journal(clock_us=clock)
    journal.append(conn, [open_accounts()])
    journal.append(conn, [transfer("cash:EUR", "wallet:EUR", "EUR", 100, "fund")])
    other: list[AppendResult] = []

    def spend_elsewhere() -> None:
        with psycopg.connect(db_url, autocommit=True) as c2:
            other.extend(Journal(clock_us=clock).append(c2, [_spend("other")]))

    writer = threading.Thread(target=spend_elsewhere)

    def before_take(taken: int) -> None:
        if taken == 1:
            writer.start()
            _wait_for_lock_waiter(db_url)

    outcomes = stream(
        journal,
        conn,
        [[earn("member:1", 5, "e")], [_spend("ours"), earn("member:1", 7, "e2")]],
        before_take,
    )
    writer.join()
    assert codes([other[0]]) == ["ok"]
    assert codes(outcomes[0][1]) == ["ok"]
    assert codes(outcomes[1][1]) == [Code.INSUFFICIENT_BALANCE.value, "ok"]
    assert verify_database(conn).tree_size == 5
    assert reads.balance(conn, "member:1", T0_US).available == 12  # type: ignore[union-attr]


def _spend(key: str) -> EntryRequest:
    return transfer("wallet:EUR", "cash:EUR", "EUR", 100, key)


def _wait_for_lock_waiter(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as c:
        for _ in range(500):
            row = c.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            ).fetchone()
            if row and row[0]:
                return
            threading.Event().wait(0.01)
    raise AssertionError("the other writer never waited for the head")


class _SeenGuard:
    """Refuses a request whose key a projection of an earlier batch recorded."""

    def __init__(self, seen: set[str]) -> None:
        self.seen = seen

    def judge(self, request: EntryRequest, state: State, time_us: int) -> Rejection | None:
        if request.meta.get("needs_unseen") in self.seen:
            return Rejection(Code.PRECONDITION_FAILED, "seen")
        return None

    def accepted(self, request: EntryRequest) -> None:
        self.seen.add(request.ref_key)


def test_a_guard_reads_what_the_batch_before_projected(conn: Conn) -> None:
    """The guard of batch 2 reads a table batch 1's after_append wrote: it runs under
    batch 2's lock, after batch 1 committed, and sees it."""
    conn.execute("CREATE TABLE seen_key (key text PRIMARY KEY)")

    def before(c: Conn, requests: Sequence[EntryRequest]) -> _SeenGuard:
        return _SeenGuard({k for (k,) in c.execute("SELECT key FROM seen_key").fetchall()})

    def after(c: Conn, appended: list[tuple[EntryRequest, Appended]]) -> None:
        for request, _ in appended:
            c.execute("INSERT INTO seen_key VALUES (%s)", (request.ref_key,))

    clock = Clock()
    Journal(clock_us=clock).append(conn, [open_accounts()])
    journal = Journal(clock_us=clock, before_append=before, after_append=after)
    fact = EntryRequest("fact", "test", "k1")
    needs = EntryRequest("fact", "test", "k2", meta={"needs_unseen": "k1"})
    outcomes = stream(journal, conn, [[fact], [needs]])
    assert codes(outcomes[0][1]) == ["ok"]
    assert codes(outcomes[1][1]) == [Code.PRECONDITION_FAILED.value]


def test_a_batch_the_database_refuses_lets_the_next_be_judged_again(conn: Conn) -> None:
    """Batch 1 carries text PostgreSQL cannot store; it fails whole, nothing of it is
    written, and batch 2 (judged as if batch 1 had committed) is judged again."""
    clock = Clock()
    journal = Journal(clock_us=clock)
    journal.append(conn, [open_accounts()])
    bad = EntryRequest("fa\x00ct", "test", "bad")  # kind: read by no load, refused at write
    outcomes = stream(
        journal,
        conn,
        [[earn("member:1", 5, "e1"), bad], [earn("member:1", 7, "e2"), earn("member:1", 5, "e1")]],
    )
    assert isinstance(outcomes[0][1], psycopg.Error)
    assert codes(outcomes[1][1]) == ["ok", "ok"]
    assert verify_database(conn).tree_size == 3
    assert reads.balance(conn, "member:1", T0_US).available == 12  # type: ignore[union-attr]


def test_group_committer_streams_and_halves_a_refused_batch(db_url: str, conn: Conn) -> None:
    clock = Clock()
    Journal(clock_us=clock).append(conn, [open_accounts()])

    def connect() -> Conn:
        return psycopg.connect(db_url, autocommit=True)

    committer = GroupCommitter(connect, Journal(clock_us=clock), entries_per_batch_max=8)
    outcomes: dict[str, Any] = {}

    def caller(worker: int) -> None:
        for n in range(12):
            key = f"w{worker}-{n}" if (worker, n) != (3, 5) else "bad\x00"
            try:
                outcomes[key] = committer.submit(earn("member:1", 1, key))
            except psycopg.Error as exc:
                outcomes[key] = exc

    threads = [threading.Thread(target=caller, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    committer.close()
    assert isinstance(outcomes.pop("bad\x00"), psycopg.Error)
    wrong = {k: r for k, r in outcomes.items() if not isinstance(r, Appended) or r.replayed}
    assert wrong == {}
    assert verify_database(conn).tree_size == 1 + len(outcomes)
    assert reads.balance(conn, "member:1", T0_US).available == len(outcomes)  # type: ignore[union-attr]


def test_a_next_batch_whose_reads_fail_fails_alone(conn: Conn) -> None:
    """Batch 2's reads (in batch 1's transaction) fail on a reference PostgreSQL cannot
    hold: batch 1 is judged again and commits alone, batch 2 then fails on its own reads,
    and batch 3 goes on."""
    clock = Clock()
    journal = Journal(clock_us=clock)
    journal.append(conn, [open_accounts()])
    outcomes = stream(
        journal,
        conn,
        [
            [earn("member:1", 5, "e1")],
            [earn("member:1", 7, "nul\x00")],
            [earn("member:1", 1, "e3")],
        ],
    )
    assert codes(outcomes[0][1]) == ["ok"]
    assert isinstance(outcomes[1][1], psycopg.Error)
    assert codes(outcomes[2][1]) == ["ok"]
    assert verify_database(conn).tree_size == 3

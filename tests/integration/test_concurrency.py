"""Concurrent writers: threads, processes, group commit, and writers that die.

The chain-head lock serialises appends, so however many writers race, ``seq`` has neither
gaps nor forks, no non-overdraft account is spent below what its holds reserve, and a
request retried after its writer died is posted exactly once.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from _journal_helpers import (
    FUNDED,
    MEMBER_2_HELD,
    T0_US,
    Clock,
    SpendOutcome,
    append_and_hang,
    earn,
    expect_appended,
    fund_for_spenders,
    killed_writer_request,
    open_accounts,
    spend_in_process,
    spend_round_robin,
)

from ledger import reads
from ledger.group_commit import GroupCommitter
from ledger.journal import Appended, Journal
from ledger.rejections import Rejection
from ledger.rejections import RejectionCode as Code
from ledger.requests import EntryRequest, LotTake, PostingRequest
from ledger.verify_db import verify_database

THREADS = 16
PROCESSES = 4
ROUNDS_PER_THREAD = 4  # 16 threads x 4 rounds = 64 tries per account, more than any allows
ROUNDS_PER_PROCESS = 12  # 4 processes x 12 rounds = 48 tries per account
REQUESTS_PER_COMMITTER_THREAD = 8

Conn = psycopg.Connection[Any]


@pytest.fixture()
def conn(db_url: str) -> Iterator[Conn]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


@pytest.fixture()
def funded(conn: Conn) -> int:
    """The tree size once the spenders' accounts are funded."""
    fund_for_spenders(conn, Journal(clock_us=Clock()))
    return reads.head(conn).tree_size


def assert_journal_sound(conn: Conn) -> int:
    """No gap or fork in seq, balances equal their postings, the chain verifies."""
    row = conn.execute("SELECT count(*), max(seq) FROM ledger_entry").fetchone()
    assert row is not None
    count, max_seq = row
    assert count == max_seq + 1 == reads.head(conn).tree_size
    mismatched = conn.execute(
        "SELECT b.account, b.balance, COALESCE(sum(p.amount), 0) FROM ledger_balance b"
        " LEFT JOIN ledger_posting p USING (account) GROUP BY b.account, b.balance"
        " HAVING b.balance <> COALESCE(sum(p.amount), 0)"
    ).fetchall()
    assert mismatched == []
    lot_mismatched = conn.execute(
        "SELECT a.account FROM ledger_account a JOIN ledger_balance b USING (account)"
        " WHERE a.lot_tracked AND b.balance <> (SELECT COALESCE(sum(remaining), 0)"
        " FROM ledger_lot l WHERE l.account = a.account)"
    ).fetchall()
    assert lot_mismatched == []
    assert verify_database(conn).tree_size == count
    return int(count)


def assert_spends_as_funds_allow(
    conn: Conn, outcomes: list[SpendOutcome], tries_per_account: int, size_before: int
) -> None:
    accepted = Counter(account for account, code, _ in outcomes if code == "ok")
    refused = {code for _, code, _ in outcomes if code != "ok"}
    assert refused <= {Code.INSUFFICIENT_BALANCE.value}
    for f in FUNDED:
        assert tries_per_account > f.spends_allowed  # else the race proves nothing
        assert accepted[f.account] == f.spends_allowed, f.account
        balance = reads.balance(conn, f.account, T0_US)
        assert balance is not None
        held = MEMBER_2_HELD if f.account == "member:2" else 0
        assert balance.held == held
        assert balance.available == f.spendable % f.spend_amount
    seqs = sorted(seq for _, code, seq in outcomes if code == "ok")
    size_after = assert_journal_sound(conn)
    assert seqs == list(range(size_before, size_after))


def test_threads_spend_no_more_than_the_funds(db_url: str, conn: Conn, funded: int) -> None:
    barrier = threading.Barrier(THREADS)

    def spender(worker: int) -> list[SpendOutcome]:
        with psycopg.connect(db_url, autocommit=True) as own:
            barrier.wait()  # start together so that the appends contend
            return spend_round_robin(own, Journal(clock_us=Clock()), worker, ROUNDS_PER_THREAD)

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = [o for part in pool.map(spender, range(THREADS)) for o in part]
    assert_spends_as_funds_allow(conn, outcomes, THREADS * ROUNDS_PER_THREAD, funded)


def test_processes_spend_no_more_than_the_funds(db_url: str, conn: Conn, funded: int) -> None:
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(PROCESSES) as pool:
        parts = pool.starmap(
            spend_in_process, [(db_url, worker, ROUNDS_PER_PROCESS) for worker in range(PROCESSES)]
        )
    outcomes = [o for part in parts for o in part]
    assert_spends_as_funds_allow(conn, outcomes, PROCESSES * ROUNDS_PER_PROCESS, funded)


def test_group_commit_batches_concurrent_callers(db_url: str, conn: Conn) -> None:
    journal = Journal(clock_us=Clock())
    [opened] = journal.append(conn, [open_accounts()])
    expect_appended(opened)
    all_waiting = threading.Event()
    waiting = Counter[str]()
    lock = threading.Lock()

    def connect() -> Conn:
        # The writer opens its connection only once every caller is about to submit, so
        # the first batch finds a queue, not a single request.
        all_waiting.wait(timeout=30)
        return psycopg.connect(db_url, autocommit=True)

    committer = GroupCommitter(connect, journal)

    def caller(worker: int) -> list[tuple[str, Any]]:
        with lock:
            waiting["callers"] += 1
            if waiting["callers"] == THREADS:
                all_waiting.set()
        results = []
        for index in range(REQUESTS_PER_COMMITTER_THREAD):
            key = f"gc-{worker}-{index}"
            member = "member:1" if worker % 2 else "member:2"
            results.append((key, committer.submit(earn(member, 1 + index, key))))
        return results

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            answered = [r for part in pool.map(caller, range(THREADS)) for r in part]
    finally:
        committer.close()
    total = THREADS * REQUESTS_PER_COMMITTER_THREAD
    assert len(answered) == total
    for key, result in answered:  # each caller got its own entry, not a neighbour's
        appended = expect_appended(result)
        stored = reads.entry(conn, appended.seq)
        assert stored is not None and stored.ref_key == key
        assert stored.leaf_hash == appended.leaf_hash
    assert sorted(expect_appended(r).seq for _, r in answered) == list(range(1, total + 1))
    assert sum(committer.batch_sizes) == total
    assert max(committer.batch_sizes) > 1
    assert_journal_sound(conn)
    member_1 = reads.balance(conn, "member:1", T0_US)
    expected_each = sum(1 + index for index in range(REQUESTS_PER_COMMITTER_THREAD))
    assert member_1 is not None and member_1.balance == expected_each * THREADS // 2


def entries_with_reference(conn: Conn, key: str) -> int:
    row = conn.execute("SELECT count(*) FROM ledger_entry WHERE ref_key = %s", (key,)).fetchone()
    assert row is not None
    return int(row[0])


def test_writer_killed_before_commit_leaves_nothing_and_retry_posts_once(
    db_url: str, conn: Conn, funded: int
) -> None:
    balance_before = reads.balance(conn, "member:1", T0_US)
    spawn = multiprocessing.get_context("spawn")
    appended: Any = spawn.Queue()
    writer = spawn.Process(target=append_and_hang, args=(db_url, appended))
    writer.start()
    try:
        uncommitted_seq = appended.get(timeout=60)
        assert uncommitted_seq == funded
        # The writer holds its rows and the head lock, uncommitted: none of it shows.
        assert reads.head(conn).tree_size == funded
        assert entries_with_reference(conn, killed_writer_request().ref_key) == 0
        assert reads.balance(conn, "member:1", T0_US) == balance_before
    finally:
        writer.kill()
        writer.join(timeout=30)
    assert writer.exitcode == -9
    assert reads.head(conn).tree_size == funded
    assert entries_with_reference(conn, killed_writer_request().ref_key) == 0

    journal = Journal(clock_us=Clock())
    [first] = journal.append(conn, [killed_writer_request()])
    posted = expect_appended(first)
    assert (posted.seq, posted.replayed) == (funded, False)
    [again] = journal.append(conn, [killed_writer_request()])
    replayed = expect_appended(again)
    assert (replayed.seq, replayed.leaf_hash, replayed.replayed) == (
        posted.seq,
        posted.leaf_hash,
        True,
    )
    assert entries_with_reference(conn, killed_writer_request().ref_key) == 1
    after = reads.balance(conn, "member:1", T0_US)
    assert balance_before is not None and after is not None
    assert after.balance == balance_before.balance - 15
    assert_journal_sound(conn)


@pytest.mark.parametrize("how", ["closed", "backend-terminated"])
def test_retry_after_connection_lost_post_commit_returns_the_original(
    db_url: str, conn: Conn, funded: int, how: str
) -> None:
    journal = Journal(clock_us=Clock())
    request = killed_writer_request()
    lost = psycopg.connect(db_url, autocommit=True)
    journal.append(lost, [request])  # committed; the caller never sees the answer
    if how == "backend-terminated":
        conn.execute("SELECT pg_terminate_backend(%s)", (lost.info.backend_pid,))
        with pytest.raises(psycopg.OperationalError):
            lost.execute("SELECT 1")
    lost.close()
    with psycopg.connect(db_url, autocommit=True) as fresh:
        [retried] = journal.append(fresh, [request])
    result = expect_appended(retried)
    assert (result.seq, result.replayed) == (funded, True)
    stored = reads.entry(conn, funded)
    assert stored is not None and stored.leaf_hash == result.leaf_hash
    assert entries_with_reference(conn, request.ref_key) == 1
    assert_journal_sound(conn)


def test_idempotent_retries_racing_each_other_post_once(
    db_url: str, conn: Conn, funded: int
) -> None:
    """Every thread retries the same request at once: one posts, the rest replay it."""
    barrier = threading.Barrier(THREADS)

    def retry(_: int) -> Appended:
        with psycopg.connect(db_url, autocommit=True) as own:
            barrier.wait()
            [result] = Journal(clock_us=Clock()).append(own, [killed_writer_request()])
            return expect_appended(result)

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(retry, range(THREADS)))
    assert {(r.seq, r.leaf_hash) for r in results} == {(funded, results[0].leaf_hash)}
    assert sorted(r.replayed for r in results) == [False] + [True] * (THREADS - 1)
    assert entries_with_reference(conn, killed_writer_request().ref_key) == 1
    assert_journal_sound(conn)


def test_one_callers_bad_request_does_not_fail_the_others_in_its_batch(
    conn: Conn, funded: int
) -> None:
    """Group commit puts unrelated callers in one batch, so a request must be rejected
    alone, as a value: here one names a lot of an account no other request touches."""
    foreign_lot = EntryRequest(
        "spend",
        "test",
        "foreign-lot",
        postings=(
            PostingRequest("member:1", "PTS", -5, lots=(LotTake("4:1", 5),)),  # member:2's
            PostingRequest("sink", "PTS", 5),
        ),
    )
    batch = [earn("member:1", 1, "neighbour-1"), foreign_lot, earn("member:1", 2, "neighbour-2")]
    first, refused, last = Journal(clock_us=Clock()).append(conn, batch)
    assert isinstance(refused, Rejection), refused
    assert refused.code is Code.LOT_UNKNOWN
    assert (expect_appended(first).seq, expect_appended(last).seq) == (funded, funded + 1)

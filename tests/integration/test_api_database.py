"""The API's way to the database: the synchronous use cases run on SQLAlchemy's async
engine in the event loop's own thread (no worker thread per request), own their
transactions there exactly as under the CLI, and DataLoaders read many members in one
batch. Against PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from coalition import reports
from coalition.api.db import Database
from coalition.api.errors import DatabaseUnavailable
from coalition.api.group_commit import GroupCommittedCoalition, GroupCommitter
from coalition.api.loaders import Loaders
from coalition.api.replica import Reader, ReadRouting
from coalition.context import Coalition
from coalition.earn import earn_points
from coalition.members import enroll_member, member_status
from coalition.outcomes import Earned, Refusal, RefusalCode
from coalition.partners import onboard_partner, publish_earning_rules, publish_terms
from coalition.redeem import redeem_points
from ledger import reads
from ledger.journal import Appended
from ledger.rejections import Rejection
from ledger.requests import EntryRequest, PostingRequest
from ledger.verify_db import verify_database
from tests.integration.test_coalition import DAY_US, RUB_RULES, T0, TERMS, Clock, ok

MEMBERS = [f"M{i}" for i in range(12)]


@pytest.fixture()
def setup(db_url: str) -> Iterator[tuple[str, Coalition]]:
    clock = Clock()
    co = Coalition(clock_us=clock)
    with psycopg.connect(db_url, autocommit=True) as c:
        for partner in ("grocer", "fuel"):
            ok(onboard_partner(co, c, partner, f"{partner.title()} Ltd", "RUB"))
            ok(publish_terms(co, c, partner, TERMS, T0 - DAY_US, f"terms-{partner}"))
            ok(publish_earning_rules(co, c, partner, RUB_RULES, T0 - DAY_US, f"rules-{partner}"))
        for member in MEMBERS:
            ok(enroll_member(co, c, member))
    yield db_url, co


def _earn(co: Coalition, member: str, key: str, rub: int) -> Callable[[Any], Any]:
    def use_case(conn: Any) -> Any:
        return earn_points(
            co,
            conn,
            partner_id="grocer",
            ref_key=key,
            purchase_minor=rub * 100,
            currency="RUB",
            member_id=member,
        )

    return use_case


def test_use_cases_run_concurrently_on_the_event_loop_thread(setup):
    url, co = setup
    threads: set[int] = set()

    async def main() -> tuple[int, list[Any]]:
        database = Database(url, connections_max=4)
        try:

            def traced(conn: Any, fn: Callable[[Any], Any]) -> Any:
                threads.add(threading.get_ident())
                return fn(conn)

            calls = [
                database.run(traced, _earn(co, MEMBERS[i % 3], f"e-{i}", 100 * (i + 1)))
                for i in range(24)
            ]
            return threading.get_ident(), await asyncio.gather(*calls)
        finally:
            await database.close()

    loop_thread, outcomes = asyncio.run(main())
    assert threads == {loop_thread}
    assert all(isinstance(o, Earned) for o in outcomes)
    assert sorted(o.points for o in outcomes) == [i + 1 for i in range(24)]
    with psycopg.connect(url, autocommit=True) as conn:
        verified = verify_database(conn)  # raises on the first broken rule or link
        assert verified.tree_size == reads.head(conn).tree_size
        held = {m: reports.member_summary(conn, m, T0) for m in MEMBERS[:3]}
    total = sum(s.balance_points for s in held.values() if s is not None)
    assert total == sum(range(1, 25))


def test_a_use_case_that_fails_midway_writes_nothing(setup):
    url, _ = setup

    def enroll_then_fail(conn: Any) -> None:
        with conn.transaction():
            conn.execute(
                "INSERT INTO coalition_member (member_id, status, enrolled_seq)"
                " VALUES ('ghost', 'active', 0)"
            )
            raise RuntimeError("the connection dropped")

    async def main() -> None:
        database = Database(url)
        try:
            with pytest.raises(RuntimeError):
                await database.run(enroll_then_fail)
            assert await database.run(member_status, "ghost") is None
        finally:
            await database.close()

    asyncio.run(main())


def test_refusals_from_the_pipelined_append_come_back_and_write_nothing(setup):
    url, co = setup

    def spend_too_much(conn: Any) -> Any:
        return redeem_points(
            co, conn, partner_id="fuel", ref_key="r-1", points=10**6, member_id=MEMBERS[0]
        )

    async def main() -> Any:
        database = Database(url)
        try:
            before = await database.run(reads.head)
            outcome = await database.run(spend_too_much)
            after = await database.run(reads.head)
            return outcome, before, after
        finally:
            await database.close()

    outcome, before, after = asyncio.run(main())
    assert isinstance(outcome, Refusal)
    assert outcome.code is RefusalCode.INSUFFICIENT_POINTS
    assert after.tree_size == before.tree_size


class CountingDatabase(Database):
    """The real database, counting checkouts."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.runs: list[str] = []

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.runs.append(getattr(fn, "__name__", repr(fn)))
        return await super().run(fn, *args, **kwargs)


def test_a_dataloader_reads_many_members_in_one_batch(setup):
    url, co = setup
    with psycopg.connect(url, autocommit=True) as conn:
        for i, member in enumerate(MEMBERS[:6]):
            ok(_earn(co, member, f"b-{i}", 1_000 * (i + 1))(conn))
        expected = {m: reports.member_summary(conn, m, T0) for m in MEMBERS}

    async def main() -> tuple[list[Any], list[str]]:
        database = CountingDatabase(url)
        try:
            loaders = Loaders(Reader(ReadRouting(database, None), None, None))
            wanted = [*MEMBERS, "nobody"]
            found = await asyncio.gather(*(loaders.balance.load(m) for m in wanted))
            return found, database.runs
        finally:
            await database.close()

    found, runs = asyncio.run(main())
    assert runs == ["member_balances"]
    assert found[-1] is None
    for member, balance in zip(MEMBERS, found[:-1], strict=True):
        summary = expected[member]
        assert summary is not None and balance is not None
        assert (balance.balance_points, balance.available_points) == (
            summary.balance_points,
            summary.available_points,
        )
    assert [b.balance_points for b in found[:6]] == [10 * (i + 1) for i in range(6)]


def test_jobs_run_in_a_worker_thread_on_their_own_connection(setup):
    url, _ = setup

    async def main() -> tuple[int, int]:
        database = Database(url)
        try:
            ident = await database.job(lambda conn: threading.get_ident())
            return threading.get_ident(), ident
        finally:
            await database.close()

    loop_thread, job_thread = asyncio.run(main())
    assert job_thread != loop_thread


def test_concurrent_retries_of_one_earn_post_it_once(setup):
    url, co = setup

    async def main() -> list[Any]:
        database = Database(url, connections_max=8)
        try:
            same = _earn(co, MEMBERS[5], "till-7/receipt-1", 5_000)
            return await asyncio.gather(*(database.run(same) for _ in range(8)))
        finally:
            await database.close()

    outcomes = asyncio.run(main())
    assert all(isinstance(o, Earned) for o in outcomes)
    assert len({o.seq for o in outcomes}) == 1
    assert sum(not o.replayed for o in outcomes) == 1
    with psycopg.connect(url, autocommit=True) as conn:
        summary = reports.member_summary(conn, MEMBERS[5], T0)
    assert summary is not None and summary.balance_points == 50


class Tills:
    """A group committer on its own connection, a pool of ``connections_max`` for the
    tills' requests, and the references of each batch the committer appended."""

    def __init__(self, url: str, co: Coalition, connections_max: int) -> None:
        self.database = Database(url, connections_max=connections_max)
        self.committer = GroupCommitter(Database(url, connections_max=1), co)
        self.grouped = GroupCommittedCoalition(co, self.committer)
        self.batches: list[list[str]] = []
        append = co.journal.append

        def recorded(conn: Any, requests: list[Any]) -> Any:
            self.batches.append([r.ref_key for r in requests])
            return append(conn, requests)

        co.journal.append = recorded  # type: ignore[method-assign]

    async def run_all(self, *use_cases: Callable[[Any], Any]) -> list[Any]:
        try:
            calls = asyncio.gather(*(self.database.run(u) for u in use_cases))
            return await asyncio.wait_for(calls, 60)
        finally:
            await self.committer.close()
            await self.database.close()


def test_group_committed_tills_never_starve_the_committer_of_a_connection(setup):
    """More tills than pooled connections, all waiting on the committer at once: the
    committer has a connection of its own, so every one is answered."""
    url, co = setup
    tills = Tills(url, co, connections_max=2)
    earns = [_earn(tills.grouped, MEMBERS[i % 4], f"g-{i}", 100 * (i + 1)) for i in range(24)]

    outcomes = asyncio.run(tills.run_all(*earns))
    assert all(isinstance(o, Earned) for o in outcomes), outcomes
    assert sorted(o.points for o in outcomes) == [i + 1 for i in range(24)]
    assert sum(len(batch) for batch in tills.batches) == 24
    with psycopg.connect(url, autocommit=True) as conn:
        verify_database(conn)


def test_in_a_group_commit_a_refused_entry_is_refused_alone(setup):
    url, co = setup
    with psycopg.connect(url, autocommit=True) as conn:
        ok(_earn(co, MEMBERS[0], "seed", 5_000)(conn))  # 50 points to spend
    tills = Tills(url, co, connections_max=4)

    def spend(key: str, points: int) -> Callable[[Any], Any]:
        def use_case(conn: Any) -> Any:
            return redeem_points(
                tills.grouped,
                conn,
                partner_id="fuel",
                ref_key=key,
                points=points,
                member_id=MEMBERS[0],
            )

        return use_case

    earns = [_earn(tills.grouped, MEMBERS[1], f"x-{i}", 1_000) for i in range(6)]
    outcomes = asyncio.run(tills.run_all(*earns, spend("too-much", 51), spend("fits", 50)))

    assert all(isinstance(o, Earned) for o in outcomes[:6])
    assert isinstance(outcomes[6], Refusal)
    assert outcomes[6].code is RefusalCode.INSUFFICIENT_POINTS
    assert not isinstance(outcomes[7], Refusal)
    with psycopg.connect(url, autocommit=True) as conn:
        assert reads.entry_by_ref(conn, "partner:fuel", "too-much") is None
        member0 = reports.member_summary(conn, MEMBERS[0], T0)
        member1 = reports.member_summary(conn, MEMBERS[1], T0)
    assert member0 is not None and member0.balance_points == 0
    assert member1 is not None and member1.balance_points == 60


def test_a_refused_entry_leaves_the_rest_of_its_batch_written(setup):
    """Requests handed to the committer together form one batch (they are all queued
    before its task first runs); the one the rules refuse is refused alone."""
    url, co = setup
    tills = Tills(url, co, connections_max=1)
    unknown = PostingRequest("member:nobody", "PTS", 5), PostingRequest("member:M1", "PTS", -5)
    requests = [
        EntryRequest("note", "test", "before"),
        EntryRequest("note", "test", "refused", postings=unknown),
        EntryRequest("note", "test", "after"),
    ]

    async def main() -> list[Any]:
        try:
            return await asyncio.gather(*(tills.committer.submit(r) for r in requests))
        finally:
            await tills.committer.close()
            await tills.database.close()

    before, refused, after = asyncio.run(main())
    assert tills.batches == [["before", "refused", "after"]]
    assert isinstance(refused, Rejection)
    assert isinstance(before, Appended) and isinstance(after, Appended)
    assert after.seq == before.seq + 1  # nothing of the refused entry in between
    with psycopg.connect(url, autocommit=True) as conn:
        assert reads.entry_by_ref(conn, "test", "refused") is None
        assert reads.entry_by_ref(conn, "test", "after") is not None


def test_group_commit_refuses_to_run_inside_a_callers_transaction(setup):
    url, co = setup
    tills = Tills(url, co, connections_max=2)

    def inside(conn: Any) -> Any:
        with conn.transaction():
            return _earn(tills.grouped, MEMBERS[0], "in-tx", 1_000)(conn)

    with pytest.raises(AssertionError, match="inside a transaction"):
        asyncio.run(tills.run_all(inside))


def test_a_connection_lost_mid_call_is_not_handed_out_again(setup):
    """The use case used the driver connection behind SQLAlchemy's back; the pool still
    finds it dead when it resets it on return, and drops it (pool of one: the next call
    must get a new connection, not the dead one)."""
    url, _ = setup

    def lose_it(conn: Any) -> None:
        conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    async def main() -> int:
        database = Database(url, connections_max=1)
        try:
            with pytest.raises(DatabaseUnavailable) as lost:  # the API's 503
                await database.run(lose_it)
            assert isinstance(lost.value.__cause__, psycopg.OperationalError)
            return await database.run(lambda conn: reads.head(conn).tree_size)
        finally:
            await database.close()

    assert asyncio.run(main()) > 0

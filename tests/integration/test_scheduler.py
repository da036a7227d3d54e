# ruff: noqa: F811  (pytest fixtures imported from another module, used as parameters)
"""The scheduler (coalition/scheduler.py) and its jobs against a real PostgreSQL: two
schedulers at once run a job once (the advisory lock, then the cadence read under it);
a job that fails is recorded and counted and the scheduler goes on; ``stop`` cancels a
job mid-query; the hold time-out voids only expired holds, once; period close computes
and never approves; a suspended partner's writes are refused inside the append."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from coalition.context import Coalition
from coalition.hold_timeout import KIND, void_expired_holds
from coalition.job_record import job_records
from coalition.jobs import cadences, compute_last_period, settle_cycle
from coalition.outcomes import RefusalCode
from coalition.partners import set_partner_status
from coalition.redeem import authorise, capture, void
from coalition.refunds import refund_purchase
from coalition.scheduler import JOB_LOCK, Job, JobResult, Scheduler
from ledger.signed_note import Signer
from ledger.verify_db import verify_database
from tests.integration.test_coalition import (  # noqa: F401 (fixtures)
    Clock,
    clock,
    co,
    conn,
    earn,
    ok,
    refused,
)


def _job(name: str, body: Any, interval_seconds: float = 3600.0) -> Job:
    return Job(name, interval_seconds, body)


def test_two_schedulers_at_once_run_a_job_once(db_url: str) -> None:
    runs: list[str] = []
    entered = threading.Event()

    def slow(conn: psycopg.Connection[Any]) -> JobResult:
        runs.append(threading.current_thread().name)
        entered.set()
        time.sleep(0.5)  # long enough for the other scheduler to come and find it busy
        return JobResult("ok", "done")

    job = _job("probe", slow)
    one, two = Scheduler(db_url, [job]), Scheduler(db_url, [job])
    outcomes: dict[str, str] = {}
    # (The job has no record yet, so a busy attempt now is counted with that scheduler's
    # own next run; with a record, at once, as here.)
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("INSERT INTO coalition_job VALUES ('probe', 0, 0, 'ok', '', 0, 0, 0, 0)")
    first = threading.Thread(target=lambda: outcomes.update(one=one.attempt(job)))
    first.start()
    assert entered.wait(10)
    outcomes["two"] = two.attempt(job)  # while one runs it
    first.join()
    assert outcomes == {"one": "ok", "two": "busy"}
    # Both come back: it ran less than its interval ago, wherever that was.
    assert (one.attempt(job), two.attempt(job)) == ("not due", "not due")
    assert len(runs) == 1
    with psycopg.connect(db_url, autocommit=True) as c:
        [record] = job_records(c)
    assert (record.job, record.last_outcome, record.last_detail) == ("probe", "ok", "done")
    assert record.runs == {"ok": 1, "refused": 0, "failed": 0, "busy": 1}
    assert record.last_duration_us >= 500_000


def test_started_schedulers_keep_one_cadence_between_them(db_url: str) -> None:
    runs: list[float] = []

    def tick(conn: psycopg.Connection[Any]) -> JobResult:
        runs.append(time.monotonic())
        return JobResult("ok", "")

    job = _job("tick", tick, interval_seconds=0.5)
    schedulers = [Scheduler(db_url, [job]) for _ in range(3)]
    for s in schedulers:
        s.start()
    time.sleep(2.2)
    for s in schedulers:
        s.stop()
    # Three schedulers with a 0.5 s cadence: about 5 runs in 2.2 s, not 15.
    assert 3 <= len(runs) <= 6, runs
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert min(gaps) >= 0.45, gaps


def test_a_failing_job_is_recorded_and_the_scheduler_goes_on(db_url: str) -> None:
    calls = {"fails": 0, "works": 0}

    def fails(conn: psycopg.Connection[Any]) -> JobResult:
        calls["fails"] += 1
        raise RuntimeError("the job's own bug")

    def works(conn: psycopg.Connection[Any]) -> JobResult:
        calls["works"] += 1
        return JobResult("ok", "")

    scheduler = Scheduler(db_url, [_job("fails", fails, 0.2), _job("works", works, 0.2)])
    scheduler.start()
    # Until each has run twice (bounded): a fixed sleep was too short on a busy machine.
    deadline = time.monotonic() + 30
    while (calls["fails"] < 2 or calls["works"] < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    scheduler.stop()
    assert calls["fails"] >= 2 and calls["works"] >= 2, calls
    with psycopg.connect(db_url, autocommit=True) as c:
        records = {r.job: r for r in job_records(c)}
    assert records["fails"].last_outcome == "failed"
    assert records["fails"].last_detail == "RuntimeError: the job's own bug"
    assert records["fails"].runs["failed"] == calls["fails"]
    assert records["works"].runs["ok"] == calls["works"]


def test_stop_cancels_a_running_job(db_url: str) -> None:
    started = threading.Event()

    def sleeps(conn: psycopg.Connection[Any]) -> JobResult:
        started.set()
        conn.execute("SELECT pg_sleep(60)")
        return JobResult("ok", "")

    scheduler = Scheduler(db_url, [_job("sleeps", sleeps)])
    scheduler.start()
    assert started.wait(10)
    held = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND classid = %s AND objid = hashtext('sleeps')::oid"
    )
    with psycopg.connect(db_url, autocommit=True) as c:
        assert c.execute(held, (JOB_LOCK,)).fetchone() == (1,)  # the query sees the lock
    t = time.monotonic()
    scheduler.stop()
    assert time.monotonic() - t < 5
    with psycopg.connect(db_url, autocommit=True) as c:
        # The lock went with the session: another scheduler may run the job at once.
        # Only this job's lock in this database (pg_locks is the whole server's, and other
        # tests' committers hold advisory locks of their own); the backend may take a
        # moment to go, so ask until it has (bounded).
        deadline = time.monotonic() + 10
        while True:
            row = c.execute(held, (JOB_LOCK,)).fetchone()
            if row == (0,) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert row == (0,)


def test_cadences_come_from_the_environment() -> None:
    assert cadences({})["holds"] == 60.0
    assert cadences({"COALITION_JOB_EXPIRY_SECONDS": "0"})["expiry"] == 0.0
    with pytest.raises(ValueError, match="COALITION_JOB_SETTLE_SECONDS"):
        cadences({"COALITION_JOB_SETTLE_SECONDS": "soon"})
    assert settle_cycle({"COALITION_SETTLE_CYCLE": "weekly"}) == "weekly"
    with pytest.raises(ValueError, match="COALITION_SETTLE_CYCLE"):
        settle_cycle({"COALITION_SETTLE_CYCLE": "yearly"})


@pytest.fixture()
def held(co: Coalition, conn: psycopg.Connection[Any], clock: Clock) -> Iterator[int]:
    earn(co, conn, "grocer", "M2", 5_000, "g-h1")
    hold = ok(
        authorise(
            co,
            conn,
            partner_id="airline",
            ref_key="auth-h",
            points=10,
            member_id="M2",
            hold_seconds=60,
        )
    )
    yield hold.hold_seq


def test_expired_holds_are_voided_once(co, conn, clock, held) -> None:
    live = ok(
        authorise(
            co,
            conn,
            partner_id="airline",
            ref_key="auth-l",
            points=5,
            member_id="M2",
            hold_seconds=600,
        )
    )
    assert void_expired_holds(co, conn, as_of_us=clock.now_us).voided == 0
    clock.now_us += 61_000_000
    assert void_expired_holds(co, conn, as_of_us=clock.now_us).voided == 1
    assert void_expired_holds(co, conn, as_of_us=clock.now_us).voided == 0  # once
    status = dict(conn.execute("SELECT hold_seq, status FROM ledger_hold").fetchall())
    assert status == {held: "voided", live.hold_seq: "active"}
    (kind,) = conn.execute(
        "SELECT e.kind FROM ledger_hold h JOIN ledger_entry e ON e.seq = h.closed_seq"
        " WHERE h.hold_seq = %s",
        (held,),
    ).fetchone()
    assert kind == KIND
    # A capture of it is still told it expired, not that it is closed.
    refused(
        capture(co, conn, partner_id="airline", ref_key="cap-h", hold_seq=held, points=10),
        RefusalCode.HOLD_EXPIRED,
    )
    verify_database(conn)  # raises on any failure: the voids replay


def test_a_suspended_partner_writes_nothing_in_its_name(co, conn, clock, held) -> None:
    earned = earn(co, conn, "airline", "M2", 1_000, "a-1")
    assert earned.points > 0
    ok(set_partner_status(co, conn, "airline", "suspended", "suspend-airline"))
    before = conn.execute("SELECT tree_size FROM ledger_chain").fetchone()
    refused(
        void(co, conn, partner_id="airline", ref_key="void-s", hold_seq=held),
        RefusalCode.PARTNER_SUSPENDED,
    )
    refused(
        refund_purchase(
            co, conn, partner_id="airline", ref_key="ref-s", earn_ref_key="a-1", refund_minor=100
        ),
        RefusalCode.PARTNER_SUSPENDED,
    )
    assert conn.execute("SELECT tree_size FROM ledger_chain").fetchone() == before
    # The coalition's own time-out still closes the suspended partner's expired hold.
    clock.now_us += 61_000_000
    assert void_expired_holds(co, conn, as_of_us=clock.now_us).voided == 1


def test_period_close_computes_and_never_approves(co, conn, clock) -> None:
    earn(co, conn, "grocer", "M1", 1_000, "g-p1")
    signer = Signer.from_seed("ledger.scheduler-test.example", bytes(32))
    clock.now_us += 40 * 86_400_000_000  # the month of T0 is over
    first = compute_last_period(co, conn, signer, "monthly")
    assert first.outcome == "ok" and first.detail.startswith("computed run 2027-01"), first
    assert compute_last_period(co, conn, signer, "monthly").detail == ""  # has its run
    rows = conn.execute(
        "SELECT run_id, status, computed_by FROM coalition_settlement_run"
    ).fetchall()
    assert rows == [("2027-01", "computed", "scheduler")]

"""The expiry job racing redemptions of the same member's points, on real PostgreSQL
connections from threads (the use cases the API and the CLI run, without HTTP: the
server's clock cannot be set, and the race needs the tills to see the lots still
unexpired while the job sees them expired).

Two coalitions share the database: the tills' clock stands a day after the member's
lots were opened (they are live), the job's 40 days after (the expiry policy is one
month: they are expired). The job starts once the tills have redeemed a few times and
sweeps while they go on; the journal's time never goes back, so once the job's entry is
written every later redemption is judged at a time past the lots' expiry and refused.

Whatever the interleaving: no point is both redeemed and expired — for every lot, what
redemptions took plus what expiry took plus what remains is what it opened with — nothing
remains after the last sweep, no redemption is written after an expiry of those lots,
the balance never went below zero, and the journal verifies."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from coalition.context import Coalition
from coalition.earn import earn_points
from coalition.earning import EarningRules
from coalition.expiry import expire_points
from coalition.members import enroll_member
from coalition.outcomes import Expired, Redeemed, Refusal, RefusalCode
from coalition.partners import (
    onboard_partner,
    publish_earning_rules,
    publish_terms,
    set_expiry_policy,
)
from coalition.redeem import redeem_points
from ledger import reads
from ledger.verify_db import verify_database
from settlement.terms import PartnerTerms

DAY_US = 86_400_000_000
T0 = 1_800_000_000_000_000  # 2027-01-15T08:00:00Z
ROUND_DAYS = 100  # each round opens its lots after the previous round's job ran
TERMS = PartnerTerms(
    Decimal("0.01"), Decimal("0.008"), 50, Decimal("0.5"), "monthly", "multilateral"
)
RUB_RULES = EarningRules("RUB", 1, 10_000)  # 1 point per 100.00 RUB
ISSUERS = ("grocer", "fuel")

ROUNDS = 4
LOTS = 20
LOT_POINTS = 50
SPEND = 7  # not a divisor of LOT_POINTS: redemptions split lots
TILLS = 6
REDEEMED_BEFORE_EXPIRING = 10
TILL_LOOP_MAX = LOTS * LOT_POINTS // SPEND + 10
SWEEPS_MAX = 5
BUSY_RETRIES_MAX = 20
STOPS = frozenset({RefusalCode.POINTS_EXPIRED, RefusalCode.INSUFFICIENT_POINTS})


class Clock:
    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


@pytest.fixture()
def clocks() -> tuple[Clock, Clock]:
    """The tills' clock and the expiry job's."""
    return Clock(T0), Clock(T0)


@pytest.fixture()
def conn(db_url: str, clocks: tuple[Clock, Clock]) -> Iterator[psycopg.Connection[Any]]:
    co = Coalition(clock_us=clocks[0])
    with psycopg.connect(db_url, autocommit=True) as c:
        for partner in (*ISSUERS, "airline"):
            _ok(onboard_partner(co, c, partner, f"{partner.title()} Ltd", "RUB"))
            _ok(publish_terms(co, c, partner, TERMS, T0 - DAY_US, f"terms-{partner}-1"))
            _ok(publish_earning_rules(co, c, partner, RUB_RULES, T0 - DAY_US, f"rules-{partner}"))
        _ok(set_expiry_policy(co, c, 1, "expiry-one-month"))
        yield c


def _ok(outcome: Any) -> Any:
    assert not isinstance(outcome, Refusal), outcome
    return outcome


def test_expiry_racing_redemptions_takes_no_point_twice(
    db_url: str, conn: psycopg.Connection[Any], clocks: tuple[Clock, Clock]
) -> None:
    tills_clock, job_clock = clocks
    tills, job = Coalition(clock_us=tills_clock), Coalition(clock_us=job_clock)
    interleaved = Counter[str]()
    for n in range(ROUNDS):
        opened_us = T0 + n * ROUND_DAYS * DAY_US
        tills_clock.now_us = job_clock.now_us = opened_us
        member = f"XR{n}"
        _ok(enroll_member(tills, conn, member))
        for i in range(LOTS):
            _ok(
                earn_points(
                    tills,
                    conn,
                    partner_id=ISSUERS[i % len(ISSUERS)],
                    ref_key=f"xr-earn-{n}-{i}",
                    purchase_minor=LOT_POINTS * 10_000,
                    currency="RUB",
                    member_id=member,
                )
            )
        tills_clock.now_us = opened_us + DAY_US  # the lots are live for the tills
        job_clock.now_us = opened_us + 40 * DAY_US  # and expired for the job

        redeemed, runs = _race(db_url, tills, job, member, f"xr-{n}")
        # A redemption came between the job's read and its append (the job refused), or
        # the job wrote while points were still there to spend (the tills refused after).
        interleaved["job refused: a lot was spent under it"] += sum(bool(r.refused) for r in runs)
        interleaved["job wrote first"] += any(
            r.points > LOTS * LOT_POINTS % SPEND for r in runs if r.entries
        )
        for _ in range(SWEEPS_MAX):  # after the race: what the job found spent, again
            done = expire_points(job, conn, as_of_us=job_clock.now_us)
            runs.append(done)
            if done.entries == 0 and not done.refused:
                break
        else:
            pytest.fail(f"round {n}: expiry still refused after {SWEEPS_MAX} sweeps: {runs}")

        wins = [o for till in redeemed for o in till if isinstance(o, Redeemed)]
        refusals = [o for till in redeemed for o in till if isinstance(o, Refusal)]
        lots = _lots(conn, member)
        taken = _taken_by_lot(conn, member)
        expiries = [e for e in taken if e[1] == "expire"]
        redeems = [e for e in taken if e[1] == "redeem"]
        first_expiry = min((seq for seq, *_ in expiries), default=None)
        per_lot = {
            lot: (
                sum(a for _, kind, x, a in taken if x == lot and kind == "redeem"),
                sum(a for _, kind, x, a in taken if x == lot and kind == "expire"),
                remaining,
            )
            for lot, (opened, remaining) in lots.items()
        }
        got = {
            "round": n,
            "lots": len(lots),
            "refusals": {o.code for o in refusals} <= STOPS,
            "every till stopped by a refusal": all(isinstance(t[-1], Refusal) for t in redeemed),
            "redeemed as answered": sum(o.points for o in wins),
            "redeemed in the journal": sum(a for *_, a in redeems),
            "redemptions in the journal": len({seq for seq, *_ in redeems}),
            "expired": sum(o.points for o in runs) == sum(a for *_, a in expiries),
            "redeemed + expired + remaining == opened, lot by lot": all(
                sum(per_lot[lot]) == opened for lot, (opened, _) in lots.items()
            ),
            "earned": sum(opened for opened, _ in lots.values()),
            "remaining": sum(remaining for _, remaining in lots.values()),
            "redemptions written after an expiry": [
                seq for seq, *_ in redeems if first_expiry is not None and seq > first_expiry
            ],
            "lowest balance": _lowest_balance(conn, member) >= 0,
        }
        redeemed_points = sum(o.points for o in wins)
        assert got == {
            "round": n,
            "lots": LOTS,
            "refusals": True,
            "every till stopped by a refusal": True,
            "redeemed as answered": redeemed_points,
            "redeemed in the journal": redeemed_points,
            "redemptions in the journal": len(wins),
            "expired": True,
            "redeemed + expired + remaining == opened, lot by lot": True,
            "earned": LOTS * LOT_POINTS,
            "remaining": 0,
            "redemptions written after an expiry": [],
            "lowest balance": True,
        }, {"per lot": per_lot, "expiry runs": runs}
        assert redeemed_points >= REDEEMED_BEFORE_EXPIRING * SPEND
        assert sum(o.points for o in runs) == LOTS * LOT_POINTS - redeemed_points

    verified = verify_database(conn)
    assert verified.tree_size == reads.head(conn).tree_size
    # The two did interleave (which way, and how often, is the scheduler's business).
    assert sum(interleaved.values()) > 0, interleaved


def _race(
    db_url: str, tills: Coalition, job: Coalition, member: str, prefix: str
) -> tuple[list[list[Redeemed | Refusal]], list[Expired]]:
    """TILLS threads redeem SPEND points in a loop until refused; one thread runs the
    expiry job once REDEEMED_BEFORE_EXPIRING redemptions went through. Each on its own
    connection."""
    outcomes: list[list[Redeemed | Refusal]] = [[] for _ in range(TILLS)]
    runs: list[Expired] = []
    redeemed = 0
    counted = threading.Lock()
    tills_done = threading.Event()
    barrier = threading.Barrier(TILLS + 1)
    failures: list[BaseException] = []

    def till(i: int) -> None:
        nonlocal redeemed
        try:
            with psycopg.connect(db_url, autocommit=True) as own:
                barrier.wait()
                for j in range(TILL_LOOP_MAX):
                    outcome = _redeem(tills, own, member, f"{prefix}-{i}-{j}")
                    outcomes[i].append(outcome)
                    if isinstance(outcome, Refusal):
                        break
                    with counted:
                        redeemed += 1
        except BaseException as exc:
            failures.append(exc)
            raise

    def expiry() -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as own:
                barrier.wait()
                while redeemed < REDEEMED_BEFORE_EXPIRING and not tills_done.is_set():
                    time.sleep(0.0005)
                # Rerun (as the job is, when a lot was spent between its read and its
                # append) until it writes, or the tills are done.
                while not tills_done.is_set():
                    runs.append(expire_points(job, own, as_of_us=job.clock_us()))
                    if runs[-1].entries:
                        break
        except BaseException as exc:
            failures.append(exc)
            raise

    threads = [threading.Thread(target=till, args=(i,)) for i in range(TILLS)]
    sweeper = threading.Thread(target=expiry)
    for thread in (*threads, sweeper):
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    tills_done.set()
    sweeper.join(timeout=120)
    assert not failures, failures
    assert not any(t.is_alive() for t in (*threads, sweeper)), "a thread hung"
    return outcomes, runs


def _redeem(co: Coalition, conn: psycopg.Connection[Any], member: str, ref: str) -> Any:
    """A till's redemption, retried with the same reference while BUSY."""
    for _ in range(BUSY_RETRIES_MAX):
        outcome = redeem_points(
            co, conn, partner_id="airline", ref_key=ref, points=SPEND, member_id=member
        )
        if not (isinstance(outcome, Refusal) and outcome.code is RefusalCode.BUSY):
            return outcome
    raise AssertionError(f"{ref}: still BUSY after {BUSY_RETRIES_MAX} tries")


def _lots(conn: psycopg.Connection[Any], member: str) -> dict[str, tuple[int, int]]:
    """lot id → (opened, remaining) of the member's lots."""
    rows = conn.execute(
        "SELECT lot_id, amount_opened, remaining FROM ledger_lot WHERE account = %s",
        (f"member:{member}",),
    ).fetchall()
    return {str(lot): (int(opened), int(remaining)) for lot, opened, remaining in rows}


def _taken_by_lot(conn: psycopg.Connection[Any], member: str) -> list[tuple[int, str, str, int]]:
    """(seq, kind, lot, amount) for every lot a redeem or expire entry took from, as the
    journal's canonical entries name them."""
    account = f"member:{member}"
    taken = []
    for seq, kind, canonical in conn.execute(
        "SELECT seq, kind, canonical FROM ledger_entry WHERE kind IN ('redeem', 'expire')"
        " ORDER BY seq"
    ):
        entry = json.loads(bytes(canonical))
        for posting in entry["postings"]:
            if posting["account"] == account:
                assert posting["amount"] < 0, entry
                taken += [(int(seq), str(kind), t["lot"], t["amount"]) for t in posting["lots"]]
    return taken


def _lowest_balance(conn: psycopg.Connection[Any], member: str) -> int:
    row = conn.execute(
        "SELECT coalesce(min(balance_after), 0) FROM ledger_posting"
        " WHERE account = %s AND unit = 'PTS'",
        (f"member:{member}",),
    ).fetchone()
    assert row is not None
    return int(row[0])

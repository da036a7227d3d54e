"""Settlement races over real HTTP against the real server: finance keys sending the
published finance operations (graphql/operations/finance/) at the same instant. Whatever
the timing, a period gets one run, a run is approved once (its positions posted once), and
each payment is confirmed once; every other answer is a typed refusal or a replay, never an
error; and the journal still verifies.

Each race runs several rounds. A round settles a fresh period (a day of last month) after
some fresh cross-partner activity, so that every run has positions and payments. A period
holds the entries of its label and may settle only once it has ended, which the tests
cannot wait for: just before a round computes, its period's end is moved to that moment
(``settle.period_bounds``, in this process, where the server runs), so the round's run
holds everything since the previous round's run.

The keys: ``finance`` computes; ``finance2`` (seeded) and ``finance3`` (created here over the
API) are the second pair of eyes; a run's computer may not approve it (SAME_APPROVER)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from coalition import settle
from ledger.timefmt import now_us
from settlement import periods
from tests.e2e._races import (
    ERROR,
    STEP_MINOR,
    Answer,
    Tills,
    entries,
    is_refusal,
    run,
    tag,
    verify,
)

if TYPE_CHECKING:
    from tests.e2e.conftest import Seeded

ROUNDS = 3
APPROVERS = ("finance2", "finance3")
PER_APPROVER = 3  # 6 approvals of one run at once, and 2 more by the key that computed it
BY_THE_COMPUTER = 2
CONFIRMATIONS_PER_KEY = 3  # per payment: 6 confirmations at once, all payments together
COMPUTES = 6


EndsNow = Callable[[str], None]


@pytest.fixture()
def ends_now(monkeypatch: pytest.MonkeyPatch) -> EndsNow:
    """``ends_now(label)``: period ``label`` ends at this moment (it has then ended, and
    every entry so far is before its end); other periods keep their calendar bounds."""
    ends: dict[str, int] = {}
    real = periods.period_bounds

    def bounds(name: str, zone: str) -> tuple[str, int, int]:
        cycle, start_us, end_us = real(name, zone)
        return cycle, start_us, ends.get(name, end_us)

    monkeypatch.setattr(settle, "period_bounds", bounds)

    def end(label: str) -> None:
        ends[label] = now_us()

    return end


def _day(period: str, n: int) -> str:
    """Round ``n``'s period: day n+1 of ``period`` (last month)."""
    return f"{period}-{n + 1:02d}"


async def _finance_keys(tills: Tills) -> dict[str, str]:
    """``finance3`` created; each finance key's principal as the runs record it."""
    await tills.create_key("finance3", "FINANCE", "finance (third, races)", None)
    return {who: f"key:{await tills.key_id(who)}" for who in ("finance", *APPROVERS)}


async def _cross_partner_activity(tills: Tills, t: str) -> None:
    """Points issued by grocer and fuel and redeemed at airline: the next run has lines,
    positions and payments."""
    member = f"st-{t}"
    await tills.enroll(member)
    await tills.earn(member, 100, f"st-earn-g-{t}")
    await tills.ok(
        "fuel",
        "PostPurchase",
        "Earned",
        reference=f"st-earn-f-{t}",
        member={"memberId": member},
        purchaseMinor=50 * STEP_MINOR,
        currency="RUB",
    )
    await tills.ok(
        "airline",
        "RedeemAtTill",
        "Redeemed",
        reference=f"st-redeem-{t}",
        member={"memberId": member},
        points=130,
    )


async def _compute(tills: Tills, who: str, period: str) -> Answer:
    return await tills.call(who, "ComputeSettlement", period=period)


async def _computed_run(tills: Tills, period: str) -> tuple[str, dict[str, Any]]:
    """``finance`` computes ``period``: the run's id and its JSON."""
    computed = await _compute(tills, "finance", period)
    assert computed.get("__typename") != ERROR, computed
    assert (computed["status"], computed["revision"]) == ("computed", 1), computed
    body = json.loads(computed["runJson"])
    assert body["positions"] and body["payments"], body
    return str(computed["runId"]), body


def _of_run(db_url: str, kind: str, run_id: str) -> list[dict[str, Any]]:
    return [e for e in entries(db_url, kind) if e["meta"].get("run") == run_id]


def _run_row(db_url: str, run_id: str) -> tuple[Any, ...]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT status, approved_by, approved_seq FROM coalition_settlement_run"
            " WHERE run_id = %s",
            (run_id,),
        ).fetchone()
    assert row is not None, run_id
    return tuple(row)


# -- 1. approvals of one run -----------------------------------------------------------------


def test_concurrent_approvals_of_one_run_approve_it_once(
    api: str, seeded: Seeded, period: str, ends_now: EndsNow
) -> None:
    """6 approvals of one computed run at once (3 by finance2, 3 by finance3) and 2 by the
    key that computed it: exactly one is Recorded (not a replay); the other five are
    refused RUN_NOT_COMPUTED (the run is approved by then — the schema's answer for a
    second approval, the same as when it comes later: the approval's status is judged with
    the run's row locked, so a loser never reaches the journal to be replayed), and the
    computer's are refused SAME_APPROVER or, once the run is approved, RUN_NOT_COMPUTED.
    The journal holds one ``settlement_approved`` entry for the run, by the winner, and
    each of its positions posted once."""

    async def scenario(tills: Tills) -> list[dict[str, Any]]:
        principals = await _finance_keys(tills)
        seen = []
        for n in range(ROUNDS):
            await _cross_partner_activity(tills, tag())
            ends_now(_day(period, n))
            run_id, body = await _computed_run(tills, _day(period, n))
            callers = [w for w in APPROVERS for _ in range(PER_APPROVER)]
            callers += ["finance"] * BY_THE_COMPUTER
            answers = await asyncio.gather(
                *(tills.call(who, "ApproveSettlement", runId=run_id) for who in callers)
            )
            approvals = list(zip(callers, answers, strict=True))
            seconds = [a for who, a in approvals if who != "finance"]
            own = [a for who, a in approvals if who == "finance"]
            recorded = [(w, a) for w, a in approvals if a.get("__typename") == "Recorded"]
            winner, won = recorded[0] if recorded else ("nobody", {})
            got = {
                "round": n,
                "second pairs of eyes": Counter(str(a.get("__typename")) for a in seconds),
                "losers refused RUN_NOT_COMPUTED": sum(
                    is_refusal(a, "RUN_NOT_COMPUTED") for a in seconds
                ),
                "the computer's refused": sum(
                    is_refusal(a, "SAME_APPROVER", "RUN_NOT_COMPUTED") for a in own
                ),
                "approvals Recorded": len(recorded),
                "winner is a second pair of eyes": winner in APPROVERS,
                "replayed": won.get("replayed"),
            }
            assert got == {
                "round": n,
                "second pairs of eyes": {"Recorded": 1, "RunNotComputed": len(seconds) - 1},
                "losers refused RUN_NOT_COMPUTED": len(seconds) - 1,
                "the computer's refused": BY_THE_COMPUTER,
                "approvals Recorded": 1,
                "winner is a second pair of eyes": True,
                "replayed": False,
            }, approvals
            seen.append(
                {
                    "run": run_id,
                    "positions": len(body["positions"]),
                    "approved_by": principals[winner],
                    "seq": int(won["seq"]),
                }
            )
        return seen

    for round_ in run(api, seeded.keys, scenario):
        run_id = round_["run"]
        approved = _of_run(seeded.db_url, "settlement_approved", run_id)
        positions = _of_run(seeded.db_url, "settlement_position", run_id)
        got = {
            "approval entries": [(e["seq"], e["meta"]["approved_by"]) for e in approved],
            "position entries": len(positions),
            "distinct positions": len({e["ref"]["key"] for e in positions}),
            "run row": _run_row(seeded.db_url, run_id),
        }
        assert got == {
            "approval entries": [(round_["seq"], round_["approved_by"])],
            "position entries": round_["positions"],
            "distinct positions": round_["positions"],
            "run row": ("approved", round_["approved_by"], round_["seq"]),
        }, run_id
    verify(seeded.db_url)


# -- 2. confirmations of each payment --------------------------------------------------------


def test_concurrent_confirmations_of_each_payment_record_it_once(
    api: str, seeded: Seeded, period: str, ends_now: EndsNow
) -> None:
    """An approved run; every payment confirmed 6 times at once (3 by finance2, 3 by
    finance3), all payments together: per payment exactly one confirmation is Recorded
    afresh; the winner's own other tries are replays of it (same seq, ``replayed``), the
    other key's are refused PAYMENT_ALREADY_CONFIRMED, told who confirmed it and in which
    entry. One ``settlement_paid``
    entry per payment, and the run ends ``paid``."""

    async def scenario(tills: Tills) -> list[dict[str, Any]]:
        await _finance_keys(tills)
        seen = []
        for n in range(ROUNDS):
            await _cross_partner_activity(tills, tag())
            ends_now(_day(period, n))
            run_id, body = await _computed_run(tills, _day(period, n))
            approved = await tills.call("finance2", "ApproveSettlement", runId=run_id)
            assert approved.get("__typename") == "Recorded", approved
            e2e_ids = [p["end_to_end_id"] for p in body["payments"]]
            calls = [(e2e, who) for e2e in e2e_ids for who in APPROVERS]
            calls = [c for c in calls for _ in range(CONFIRMATIONS_PER_KEY)]
            answers = await asyncio.gather(
                *(
                    tills.call(who, "ConfirmPayment", runId=run_id, endToEndId=e2e)
                    for e2e, who in calls
                )
            )
            by_payment: dict[str, list[tuple[str, Answer]]] = {e2e: [] for e2e in e2e_ids}
            for (e2e, who), answer in zip(calls, answers, strict=True):
                by_payment[e2e].append((who, answer))
            paid: dict[str, int] = {}
            for e2e, confirmations in by_payment.items():
                fresh = [
                    (who, a)
                    for who, a in confirmations
                    if a.get("__typename") == "Recorded" and a["replayed"] is False
                ]
                assert len(fresh) == 1, (n, e2e, confirmations)
                winner, won = fresh[0]
                replays = [
                    a
                    for who, a in confirmations
                    if who == winner
                    and a is not won
                    and a.get("__typename") == "Recorded"
                    and a["replayed"] is True
                    and a["seq"] == won["seq"]
                ]
                conflicts = [
                    a
                    for who, a in confirmations
                    if who != winner and is_refusal(a, "PAYMENT_ALREADY_CONFIRMED")
                ]
                got = {"round": n, "replays": len(replays), "conflicts": len(conflicts)}
                assert got == {
                    "round": n,
                    "replays": CONFIRMATIONS_PER_KEY - 1,
                    "conflicts": CONFIRMATIONS_PER_KEY,
                }, (e2e, confirmations)
                paid[e2e] = int(won["seq"])
            seen.append({"run": run_id, "paid": paid})
        return seen

    for round_ in run(api, seeded.keys, scenario):
        run_id = round_["run"]
        paid = _of_run(seeded.db_url, "settlement_paid", run_id)
        with psycopg.connect(seeded.db_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT end_to_end_id, confirmed_seq FROM coalition_payment_confirmation"
                " WHERE run_id = %s",
                (run_id,),
            ).fetchall()
        confirmations = {str(e2e): int(seq) for e2e, seq in rows}
        got = {
            "paid entries": sorted((e["meta"]["end_to_end_id"], e["seq"]) for e in paid),
            "confirmation rows": confirmations,
            "status": _run_row(seeded.db_url, run_id)[0],
        }
        assert got == {
            "paid entries": sorted(round_["paid"].items()),
            "confirmation rows": round_["paid"],
            "status": "paid",
        }, run_id
    verify(seeded.db_url)


# -- 3. computes of one period ---------------------------------------------------------------


def test_concurrent_computes_of_one_period_make_one_run(
    api: str, seeded: Seeded, period: str, ends_now: EndsNow
) -> None:
    """6 computes of one period at once (2 by each finance key): every one answers the same
    run (revision 1, computed, the same cut and bytes) — none an error — and the period
    has exactly one run row."""

    async def scenario(tills: Tills) -> list[tuple[str, str]]:
        principals = await _finance_keys(tills)
        days = []
        for n in range(ROUNDS):
            day = _day(period, n)
            await _cross_partner_activity(tills, tag())
            ends_now(day)
            callers = [who for who in ("finance", *APPROVERS) for _ in range(COMPUTES // 3)]
            answers = await asyncio.gather(*(_compute(tills, who, day) for who in callers))
            errors = [a for a in answers if a.get("__typename") == ERROR]
            assert not errors, (n, errors)
            first = answers[0]
            got = {
                "round": n,
                "distinct runs answered": {
                    (a["runId"], a["revision"], a["status"], a["startSeq"], a["endSeq"])
                    for a in answers
                },
                "distinct run bytes": len({a["runJson"] for a in answers}),
                "computers": {a["computedBy"] for a in answers},
            }
            assert got == {
                "round": n,
                "distinct runs answered": {
                    (day, 1, "computed", first["startSeq"], first["endSeq"])
                },
                "distinct run bytes": 1,
                "computers": {first["computedBy"]},
            }, answers
            assert first["computedBy"] in principals.values(), first
            days.append((day, str(first["runId"])))
        return days

    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        for day, run_id in run(api, seeded.keys, scenario):
            rows = conn.execute(
                "SELECT run_id, revision, status FROM coalition_settlement_run WHERE period = %s",
                (day,),
            ).fetchall()
            assert rows == [(run_id, 1, "computed")], (day, rows)
    verify(seeded.db_url)

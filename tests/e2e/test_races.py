"""Races over real HTTP against the real server (uvicorn, group commit on): many tills send
the published partner operations at the same instant, and exactly the allowed number
succeed — whatever the timing — while balances never go below policy and the journal
still verifies. Each race runs several rounds, each with a fresh member and references.

A BUSY answer is retried with the same reference (as a till would) before it is counted;
every other answer must be the success type or a typed refusal (never a GraphQL error)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from tests.e2e._races import (
    DOCUMENTS,
    ERROR,
    STEP_MINOR,
    Answer,
    Tills,
    balance_of,
    corrections,
    is_refusal,
    lowest_balance,
    points,
    run,
    tag,
    tally,
    verify,
)

if TYPE_CHECKING:
    from tests.e2e.conftest import Seeded

ROUNDS = 5
CONTENDERS = 20


def _typed(answers: list[Answer], success: str) -> None:
    """Every answer is the success type or a typed union refusal: no error, no 500."""
    odd = [a for a in answers if a.get("__typename") != success and not is_refusal(a)]
    assert not odd, odd


# -- 1. full refunds of one redemption -------------------------------------------------------


def test_concurrent_full_refunds_of_one_redemption_give_the_points_back_once(
    api: str, seeded: Seeded
) -> None:
    """Earn 400, redeem 200 and 100; then 20 full refunds of the 100 at once: one is
    refunded, 19 are refused as exceeding the original; the member holds 400 − 300 + 100."""

    async def scenario(tills: Tills) -> list[tuple[str, dict[str, Any]]]:
        seen = []
        for n in range(ROUNDS):
            t = tag()
            member = f"rr-{t}"
            await tills.enroll(member)
            await tills.earn(member, 400, f"rr-earn-{t}")
            for reference, spend in ((f"rr-200-{t}", 200), (f"rr-100-{t}", 100)):
                await tills.ok(
                    "fuel",
                    "RedeemAtTill",
                    "Redeemed",
                    reference=reference,
                    member={"memberId": member},
                    points=spend,
                )
            refunds = await asyncio.gather(
                *(
                    tills.settled(
                        "fuel",
                        "RefundRedemption",
                        reference=f"rr-refund-{t}-{i}",
                        redemptionReference=f"rr-100-{t}",
                        points=100,
                    )
                    for i in range(CONTENDERS)
                )
            )
            _typed(refunds, "Refunded")
            balance = await tills.balance(member)
            got = {
                "round": n,
                "answers": tally(refunds),
                "points refunded": sum(points(refunds, "Refunded")),
                "balance": balance["balancePoints"],
                "debt": balance["debtPoints"],
            }
            assert got == {
                "round": n,
                "answers": {"Refunded": 1, "RefundExceedsOriginal": CONTENDERS - 1},
                "points refunded": 100,
                "balance": 200,
                "debt": 0,
            }, refunds
            seen.append((member, balance))
        return seen

    for member, _ in run(api, seeded.keys, scenario):
        assert lowest_balance(seeded.db_url, member) >= 0
    verify(seeded.db_url)


# -- 2. full refunds of one purchase ---------------------------------------------------------


def test_concurrent_full_refunds_of_one_purchase_claw_back_once(api: str, seeded: Seeded) -> None:
    """20 full refunds of one purchase at once: one is refunded; the member loses exactly
    the points that purchase earned (never more, no debt) and the issuer is credited once."""
    earned_points = 250

    async def scenario(tills: Tills) -> list[tuple[int, str]]:
        earns = []
        for n in range(ROUNDS):
            t = tag()
            member = f"rp-{t}"
            await tills.enroll(member)
            earned = await tills.earn(member, earned_points, f"rp-earn-{t}")
            refunds = await asyncio.gather(
                *(
                    tills.settled(
                        "grocer",
                        "RefundPurchase",
                        reference=f"rp-refund-{t}-{i}",
                        earnReference=f"rp-earn-{t}",
                        refundMinor=earned_points * STEP_MINOR,
                    )
                    for i in range(CONTENDERS)
                )
            )
            _typed(refunds, "Refunded")
            balance = await tills.balance(member)
            got = {
                "round": n,
                "answers": tally(refunds),
                "points clawed back": sum(points(refunds, "Refunded")),
                "balance": balance["balancePoints"],
                "debt": balance["debtPoints"],
            }
            assert got == {
                "round": n,
                "answers": {"Refunded": 1, "RefundExceedsOriginal": CONTENDERS - 1},
                "points clawed back": earned_points,
                "balance": 0,
                "debt": 0,
            }, refunds
            earns.append((int(earned["seq"]), member))
        return earns

    for earn_seq, member in run(api, seeded.keys, scenario):
        postings = corrections(seeded.db_url, "refund_earn", earn_seq)
        clawed = -sum(amount for account, amount in postings if account == f"member:{member}")
        credited = {
            account: amount for account, amount in postings if account != f"member:{member}"
        }
        assert (clawed, credited) == (earned_points, {"partner:grocer:issued": earned_points})
        assert lowest_balance(seeded.db_url, member) >= 0
    verify(seeded.db_url)


# -- 3. partial refunds adding up to twice the purchase --------------------------------------


def test_concurrent_partial_refunds_stop_at_the_purchase_amount(api: str, seeded: Seeded) -> None:
    """20 refunds of 10 % of one purchase at once (200 % in all): exactly 10 are refunded,
    and together they claw back exactly what the purchase earned."""
    earned_points = 100
    parts = 2 * 10

    async def scenario(tills: Tills) -> list[tuple[int, str]]:
        earns = []
        for n in range(ROUNDS):
            t = tag()
            member = f"pp-{t}"
            await tills.enroll(member)
            earned = await tills.earn(member, earned_points, f"pp-earn-{t}")
            refunds = await asyncio.gather(
                *(
                    tills.settled(
                        "grocer",
                        "RefundPurchase",
                        reference=f"pp-refund-{t}-{i}",
                        earnReference=f"pp-earn-{t}",
                        refundMinor=earned_points * STEP_MINOR // 10,
                    )
                    for i in range(parts)
                )
            )
            _typed(refunds, "Refunded")
            balance = await tills.balance(member)
            got = {
                "round": n,
                "answers": tally(refunds),
                "points clawed back": sum(points(refunds, "Refunded")),
                "balance": balance["balancePoints"],
                "debt": balance["debtPoints"],
            }
            assert got == {
                "round": n,
                "answers": {"Refunded": parts // 2, "RefundExceedsOriginal": parts // 2},
                "points clawed back": earned_points,
                "balance": 0,
                "debt": 0,
            }, refunds
            earns.append((int(earned["seq"]), member))
        return earns

    for earn_seq, member in run(api, seeded.keys, scenario):
        postings = corrections(seeded.db_url, "refund_earn", earn_seq)
        clawed = -sum(amount for account, amount in postings if account == f"member:{member}")
        assert clawed == earned_points
        assert lowest_balance(seeded.db_url, member) >= 0
    verify(seeded.db_url)


# -- 4. a redemption's refund racing new redemptions of those points -------------------------


def test_refunds_of_a_redemption_racing_redemptions_of_the_same_points(
    api: str, seeded: Seeded
) -> None:
    """A member with 100 points redeems all 100; then at once 3 full refunds of that
    redemption and 6 new redemptions of 100: one refund gives the 100 back, at most that
    many redemptions spend them, and the balance is never negative."""
    refunders, spenders = 3, 6

    async def scenario(tills: Tills) -> list[str]:
        members = []
        for n in range(ROUNDS):
            t = tag()
            member = f"rx-{t}"
            await tills.enroll(member)
            await tills.earn(member, 100, f"rx-earn-{t}")
            await tills.ok(
                "fuel",
                "RedeemAtTill",
                "Redeemed",
                reference=f"rx-first-{t}",
                member={"memberId": member},
                points=100,
            )
            refunds = [
                tills.settled(
                    "fuel",
                    "RefundRedemption",
                    reference=f"rx-refund-{t}-{i}",
                    redemptionReference=f"rx-first-{t}",
                    points=100,
                )
                for i in range(refunders)
            ]
            redemptions = [
                tills.settled(
                    "fuel",
                    "RedeemAtTill",
                    reference=f"rx-again-{t}-{i}",
                    member={"memberId": member},
                    points=100,
                )
                for i in range(spenders)
            ]
            answers = await asyncio.gather(*refunds, *redemptions)
            refunded, redeemed = answers[:refunders], answers[refunders:]
            _typed(refunded, "Refunded")
            _typed(redeemed, "Redeemed")
            balance = await tills.balance(member)
            spent = tally(redeemed)["Redeemed"]
            got = {
                "round": n,
                "refunds": tally(refunded),
                "redemptions spent at most what came back": spent <= 1,
                "refused redemptions": sum(is_refusal(a, "INSUFFICIENT_POINTS") for a in redeemed),
                "balance": balance["balancePoints"],
                "available": balance["availablePoints"],
            }
            assert got == {
                "round": n,
                "refunds": {"Refunded": 1, "RefundExceedsOriginal": refunders - 1},
                "redemptions spent at most what came back": True,
                "refused redemptions": spenders - spent,
                "balance": 100 - 100 * spent,
                "available": 100 - 100 * spent,
            }, answers
            members.append(member)
        return members

    for member in run(api, seeded.keys, scenario):
        assert lowest_balance(seeded.db_url, member) >= 0
    verify(seeded.db_url)


# -- 5. one hold: captures racing voids ------------------------------------------------------


def test_captures_and_voids_of_one_hold_race_and_exactly_one_wins(api: str, seeded: Seeded) -> None:
    """A hold of 60 out of 100; at once 3 full captures and 3 voids of it: exactly one of
    the six succeeds, and the balance shows which (40 after a capture, 100 after a void)."""
    captures, voids = 3, 3

    async def scenario(tills: Tills) -> list[str]:
        members = []
        for n in range(ROUNDS):
            t = tag()
            member = f"hv-{t}"
            await tills.enroll(member)
            await tills.earn(member, 100, f"hv-earn-{t}")
            hold = await tills.ok(
                "airline",
                "AuthoriseHold",
                "Authorised",
                reference=f"hv-hold-{t}",
                member={"memberId": member},
                points=60,
            )
            answers = await asyncio.gather(
                *(
                    tills.settled(
                        "airline",
                        "CaptureHold",
                        reference=f"hv-capture-{t}-{i}",
                        holdSeq=hold["holdSeq"],
                        points=60,
                    )
                    for i in range(captures)
                ),
                *(
                    tills.settled(
                        "airline", "VoidHold", reference=f"hv-void-{t}-{i}", holdSeq=hold["holdSeq"]
                    )
                    for i in range(voids)
                ),
            )
            captured, voided = answers[:captures], answers[captures:]
            _typed(captured, "Redeemed")
            _typed(voided, "Voided")
            wins = tally(captured)["Redeemed"] + tally(voided)["Voided"]
            balance = await tills.balance(member)
            expected_balance = 40 if tally(captured)["Redeemed"] else 100
            got = {
                "round": n,
                "successes": wins,
                "captured points": sum(points(captured, "Redeemed")),
                "balance": balance["balancePoints"],
                "held": balance["heldPoints"],
            }
            assert got == {
                "round": n,
                "successes": 1,
                "captured points": 100 - expected_balance,
                "balance": expected_balance,
                "held": 0,
            }, answers
            members.append(member)
        return members

    for member in run(api, seeded.keys, scenario):
        assert lowest_balance(seeded.db_url, member) >= 0
    verify(seeded.db_url)


# -- 6. redemptions over the balance ---------------------------------------------------------


def test_concurrent_redemptions_beyond_the_balance_spend_it_once(api: str, seeded: Seeded) -> None:
    """20 redemptions of 60 at once against 100 points: exactly one is redeemed."""

    async def scenario(tills: Tills) -> list[str]:
        members = []
        for n in range(ROUNDS):
            t = tag()
            member = f"ov-{t}"
            await tills.enroll(member)
            await tills.earn(member, 100, f"ov-earn-{t}")
            redeemed = await asyncio.gather(
                *(
                    tills.settled(
                        "fuel",
                        "RedeemAtTill",
                        reference=f"ov-{t}-{i}",
                        member={"memberId": member},
                        points=60,
                    )
                    for i in range(CONTENDERS)
                )
            )
            _typed(redeemed, "Redeemed")
            balance = await tills.balance(member)
            got = {
                "round": n,
                "answers": tally(redeemed),
                "balance": balance["balancePoints"],
                "available": balance["availablePoints"],
            }
            assert got == {
                "round": n,
                "answers": {"Redeemed": 1, "InsufficientPoints": CONTENDERS - 1},
                "balance": 40,
                "available": 40,
            }, redeemed
            members.append(member)
        return members

    for member in run(api, seeded.keys, scenario):
        assert lowest_balance(seeded.db_url, member) >= 0
    verify(seeded.db_url)


# -- a poisoned batch ------------------------------------------------------------------------

FUEL_TILLS = 8
EARNS_PER_TILL = 10
POISON_ROUNDS = 4
POISONS = {"NUL": "poison-\u0000-nul", "lone surrogate": "poison-\ud800-surrogate"}


def test_a_poisoned_reference_fails_alone_and_never_its_batch(api: str, seeded: Seeded) -> None:
    """Eight fuel tills earn in a loop while grocer sends purchases whose reference holds a
    NUL or a lone surrogate (raw JSON escapes, so the server's JSON holds them): every fuel
    earn is earned, and each poisoned request gets a typed error naming ``reference``."""

    async def scenario(tills: Tills) -> tuple[list[Answer], list[tuple[str, int, Any]], str]:
        t = tag()
        members = [f"pb-{t}-{i}" for i in range(FUEL_TILLS)]
        for member in members:
            await tills.enroll(member)
        answered = 0

        async def till(i: int) -> list[Answer]:
            nonlocal answered
            answers = []
            for j in range(EARNS_PER_TILL):
                answer = await tills.call(
                    "fuel",
                    "PostPurchase",
                    reference=f"pb-{t}-{i}-{j}",
                    member={"memberId": members[i]},
                    purchaseMinor=10 * STEP_MINOR,
                    currency="RUB",
                )
                answers.append(answer)
                answered += 1
            return answers

        async def poisoner() -> list[tuple[str, int, Any]]:
            seen = []
            total = FUEL_TILLS * EARNS_PER_TILL
            for k in range(POISON_ROUNDS):
                # Spread over the fuel traffic, each pair sent while the tills are busy.
                while answered < total * k // (POISON_ROUNDS + 1) + FUEL_TILLS // 2:
                    await asyncio.sleep(0.002)
                pairs = [
                    (what, _poisoned_body(f"{reference}-{k}", members[0]))
                    for what, reference in POISONS.items()
                ]
                sent = await asyncio.gather(*(tills.post_raw("grocer", b) for _, b in pairs))
                for (what, _), response in zip(pairs, sent, strict=True):
                    try:
                        body: Any = response.json()
                    except ValueError:
                        body = response.text[:500]
                    seen.append((what, response.status_code, body))
            return seen

        tilled, poisoned = await asyncio.gather(
            asyncio.gather(*(till(i) for i in range(FUEL_TILLS))), poisoner()
        )
        return [a for answers in tilled for a in answers], poisoned, t

    fuel, poisoned, t = run(api, seeded.keys, scenario)
    failures = [a for a in fuel if a.get("__typename") != "Earned"]
    typed = [
        (what, status, body)
        for what, status, body in poisoned
        if 200 <= status < 500 and _names_reference(body)
    ]
    untyped = [p for p in poisoned if p not in typed]
    got = {
        "fuel earns answered": len(fuel),
        "fuel earns failed": len(failures),
        "poisoned requests sent": len(poisoned),
        "poisoned requests refused by a typed error naming reference": len(typed),
    }
    assert got == {
        "fuel earns answered": FUEL_TILLS * EARNS_PER_TILL,
        "fuel earns failed": 0,
        "poisoned requests sent": POISON_ROUNDS * len(POISONS),
        "poisoned requests refused by a typed error naming reference": len(poisoned),
    }, {"fuel failures": failures[:3], "poisoned answers": untyped[:4]}
    assert {int(a["points"]) for a in fuel} == {10}
    # Nothing of the poison was written; each till's member holds exactly its own earns.
    assert [balance_of(seeded.db_url, f"pb-{t}-{i}") for i in range(FUEL_TILLS)] == [
        10 * EARNS_PER_TILL
    ] * FUEL_TILLS
    verify(seeded.db_url)


def _poisoned_body(reference: str, member: str) -> bytes:
    """A PostPurchase whose JSON carries the reference as escapes (``\\u0000``,
    ``\\ud800``): valid JSON text, even with a lone surrogate."""
    variables = {
        "reference": reference,
        "member": {"memberId": member},
        "purchaseMinor": 10 * STEP_MINOR,
        "currency": "RUB",
    }
    body = json.dumps({"query": DOCUMENTS["PostPurchase"], "variables": variables})
    assert "\\u0000" in body or "\\ud800" in body
    return body.encode("ascii")


def _names_reference(body: Any) -> bool:
    """A typed answer about the field ``reference``: the union refusal InvalidRequest, or a
    GraphQL error coded INVALID_REQUEST / BAD_USER_INPUT (never INTERNAL, never a 500)."""
    if not isinstance(body, dict):
        return False
    answer = (body.get("data") or {}).get("earn")
    if isinstance(answer, dict) and answer.get("__typename") != ERROR:
        return is_refusal(answer, "INVALID_REQUEST") and "reference" in answer["message"]
    errors = body.get("errors") or []
    codes = {(e.get("extensions") or {}).get("code") for e in errors}
    messages = " ".join(str(e.get("message")) for e in errors)
    return (
        bool(errors) and codes <= {"INVALID_REQUEST", "BAD_USER_INPUT"} and "reference" in messages
    )

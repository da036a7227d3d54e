"""Races over real HTTP against the real server (uvicorn, group commit on): many tills send
the published partner operations at the same instant, and exactly the allowed number
succeed — whatever the timing — while balances never go below policy and the journal
still verifies. Each race runs several rounds, each with a fresh member and references.

A BUSY answer is retried with the same reference (as a till would) before it is counted;
every other answer must be the success type or a typed refusal (never a GraphQL error)."""

from __future__ import annotations

import asyncio
import functools
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import psycopg

from coalition.context import Coalition
from coalition.earning import EarningRules, points_for_purchase
from coalition.members import set_member_status
from coalition.outcomes import Refusal
from ledger.timefmt import format_time_us, now_us, parse_time_us
from tests.e2e._races import (
    DOCUMENTS,
    ERROR,
    STEP_MINOR,
    Answer,
    Tills,
    balance_of,
    corrections,
    entries,
    is_error,
    is_refusal,
    lowest_balance,
    points,
    run,
    tag,
    tally,
    typename_for,
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


# -- a partner suspended while its tills earn ------------------------------------------------

SUSPENSION_ROUNDS = 4
EARNING_TILLS = 8
EARNED_BEFORE_SUSPENDING = 16  # answered before the suspension is even sent
EARNS_AFTER = 2  # per till, each sent after the suspension's answer came back
TILL_LOOP_MAX = 400  # a bound on each till's loop, should the stop never come

Sent = tuple[str, Answer]  # (reference, answer)


async def _earns_until(
    tills: Tills, who: str, members: list[str], prefix: str, stop: Callable[[], Awaitable[Answer]]
) -> tuple[list[Sent], Answer]:
    """One fuel till per member earns 10 points in a loop (references ``prefix-i-j``) while
    ``stop`` waits for ``EARNED_BEFORE_SUSPENDING`` answers and then acts; a till sends no
    earn once ``stop``'s answer is back. Every earn sent, and ``stop``'s answer."""

    def send(i: int, j: int) -> Awaitable[Sent]:
        return _earn(tills, who, members[i], f"{prefix}-{i}-{j}")

    return await _sends_until(len(members), send, stop)


async def _sends_until(
    count: int, send: Callable[[int, int], Awaitable[Sent]], stop: Callable[[], Awaitable[Answer]]
) -> tuple[list[Sent], Answer]:
    """``count`` tills each send ``send(i, j)`` for j = 0, 1, … in a loop while ``stop``
    waits for ``EARNED_BEFORE_SUSPENDING`` answers and then acts; a till sends nothing
    once ``stop``'s answer is back. Everything sent, and ``stop``'s answer."""
    stopped = asyncio.Event()
    answered = 0

    async def till(i: int) -> list[Sent]:
        nonlocal answered
        sent = []
        for j in range(TILL_LOOP_MAX):
            if stopped.is_set():
                break
            sent.append(await send(i, j))
            answered += 1
        return sent

    async def stopper() -> Answer:
        while answered < EARNED_BEFORE_SUSPENDING:
            await asyncio.sleep(0.002)
        answer = await stop()
        stopped.set()
        return answer

    tilled, answer = await asyncio.gather(
        asyncio.gather(*(till(i) for i in range(count))), stopper()
    )
    return [x for sent in tilled for x in sent], answer


async def _earn(tills: Tills, who: str, member: str, reference: str) -> Sent:
    return reference, await tills.call(
        who,
        "PostPurchase",
        reference=reference,
        member={"memberId": member},
        purchaseMinor=10 * STEP_MINOR,
        currency="RUB",
    )


def test_a_suspension_racing_earns_refuses_every_earn_after_it(api: str, seeded: Seeded) -> None:
    """Eight fuel tills earn in a loop while the operator suspends fuel (SuspendPartner);
    then each till sends two more earns; four rounds, fuel reactivated before each. Every
    earn is Earned or refused PARTNER_SUSPENDED (typed); those sent after the suspension's
    answer are all refused; every Earned one is in the journal before the suspension
    (seq), none refused is; and in the journal's order no fuel earn lies between a
    suspension of fuel and its reactivation."""

    async def scenario(tills: Tills) -> tuple[str, list[str], dict[str, Answer]]:
        t = tag()
        members = [f"su-{t}-{i}" for i in range(EARNING_TILLS)]
        for member in members:
            await tills.enroll(member)
        earned: dict[str, Answer] = {}
        for n in range(SUSPENSION_ROUNDS):
            if n:
                resumed = await tills.call(
                    "operator",
                    "SuspendPartner",
                    reference=f"su-resume-{t}-{n}",
                    partnerId="fuel",
                    status="active",
                )
                assert resumed.get("__typename") == "Recorded", resumed
            suspend = functools.partial(
                tills.call, "operator", "SuspendPartner", reference=f"su-{t}-{n}", partnerId="fuel"
            )
            during, suspension = await _earns_until(tills, "fuel", members, f"su-{t}-{n}", suspend)
            assert suspension.get("__typename") == "Recorded", suspension
            after = await asyncio.gather(
                *(
                    _earn(tills, "fuel", member, f"su-{t}-{n}-after-{i}-{k}")
                    for i, member in enumerate(members)
                    for k in range(EARNS_AFTER)
                )
            )
            won = {reference: a for reference, a in during if a.get("__typename") == "Earned"}
            earned.update(won)
            refused = [a for _, a in during + after if a.get("__typename") != "Earned"]
            got = {
                "round": n,
                "Earned at least those answered before": len(won) >= EARNED_BEFORE_SUSPENDING,
                "Earned after the suspension's seq": [
                    a for a in won.values() if int(a["seq"]) > int(suspension["seq"])
                ],
                "the others refused PARTNER_SUSPENDED": all(
                    is_refusal(a, "PARTNER_SUSPENDED") for a in refused
                ),
                "answers after the suspension": tally(a for _, a in after),
            }
            assert got == {
                "round": n,
                "Earned at least those answered before": True,
                "Earned after the suspension's seq": [],
                "the others refused PARTNER_SUSPENDED": True,
                "answers after the suspension": {"PartnerSuspended": len(after)},
            }, [a for a in refused if not is_refusal(a, "PARTNER_SUSPENDED")][:4]
        return t, members, earned

    t, members, earned = run(api, seeded.keys, scenario)
    status, written, misplaced = "active", [], []
    for entry in entries(seeded.db_url, "earn", "partner_status"):
        if entry["meta"].get("partner") != "fuel":
            continue
        if entry["kind"] == "partner_status":
            status = entry["meta"]["status"]
        elif entry["ref"]["key"].startswith(f"su-{t}-"):
            written.append(entry["ref"]["key"])
            if status != "active":
                misplaced.append(entry["seq"])
    assert misplaced == [], "fuel earns written while fuel was suspended"
    assert sorted(written) == sorted(earned), "the journal's earns are exactly those Earned"
    assert {int(a["points"]) for a in earned.values()} == {10}
    # Each till's member holds exactly its own Earned earns.
    tills_of = Counter(reference.split("-")[3] for reference in earned)
    assert [balance_of(seeded.db_url, m) for m in members] == [
        10 * tills_of[str(i)] for i in range(EARNING_TILLS)
    ]
    verify(seeded.db_url)


# -- a key revoked while its requests are in flight ------------------------------------------

REVOKE_ROUNDS = 3
KEY_TILLS = 6
AFTER_WAVE = 8  # ≤ the anonymous burst (10): a revoked key's requests count as anonymous
ANONYMOUS_REFILL_SECONDS = 2.5  # the anonymous bucket (5/s, burst 10) is full again


def test_a_revoked_key_is_refused_from_the_revocations_answer_on(api: str, seeded: Seeded) -> None:
    """A fuel till key (created over the API) earns from six tills in a loop while the
    operator revokes it (RevokeApiKey); once the revocation's answer is back the tills
    stop, and then a second wave of eight earns is sent with that key. Three rounds, a new
    key each.

    What is guaranteed, and asserted: the key is checked once per request as it is admitted
    (before GraphQL runs), and the worker that revokes a key drops it from its cache as the
    revocation commits (other workers hear of it by NOTIFY within a second:
    tests/e2e/test_workers.py) — so on this one-worker server every request that starts
    after the revocation's answer came back is refused UNAUTHENTICATED, and writes nothing.
    A request admitted before the revocation committed runs to completion with the key (it
    may be Earned, and written after the revocation); one admitted after the commit but
    before the answer is refused (UNAUTHENTICATED, or RATE_LIMITED: a refused key's requests
    share the anonymous bucket of their address). Which in-flight requests succeed is not
    guaranteed and not asserted, beyond this: the sixteen answered before the revocation was
    sent are Earned, each in-flight answer is Earned or one of those refusals, and the
    journal holds exactly the earns answered Earned.

    The second wave waits for the anonymous bucket to refill (the in-flight refusals may
    have emptied it), so that it meets the key's refusal, not the rate limit."""

    async def scenario(tills: Tills) -> tuple[str, dict[str, Answer]]:
        t = tag()
        members = [f"rk-{t}-{i}" for i in range(KEY_TILLS)]
        for member in members:
            await tills.enroll(member)
        earned: dict[str, Answer] = {}
        for n in range(REVOKE_ROUNDS):
            who = f"doomed-{n}"
            key_id = await tills.create_key(who, "PARTNER", f"fuel till {t}-{n}", "fuel")

            async def revoke(key_id: str = key_id) -> Answer:
                response = await tills.send("operator", "RevokeApiKey", keyId=key_id)
                return {"__typename": "Revoked", "body": response.json()}

            during, revocation = await _earns_until(tills, who, members, f"rk-{t}-{n}", revoke)
            assert revocation["body"] == {"data": {"revokeApiKey": True}}, revocation
            await asyncio.sleep(ANONYMOUS_REFILL_SECONDS)
            after = await asyncio.gather(
                *(
                    _earn(tills, who, members[i % KEY_TILLS], f"rk-{t}-{n}-after-{i}")
                    for i in range(AFTER_WAVE)
                )
            )
            won = {reference: a for reference, a in during if a.get("__typename") == "Earned"}
            earned.update(won)
            odd = [
                a
                for _, a in during
                if a.get("__typename") != "Earned"
                and not is_error(a, "UNAUTHENTICATED")
                and not is_error(a, "RATE_LIMITED")
            ]
            got = {
                "round": n,
                "Earned at least those answered before": len(won) >= EARNED_BEFORE_SUSPENDING,
                "in flight: neither Earned nor refused": odd,
                "after the revocation's answer: UNAUTHENTICATED": sum(
                    is_error(a, "UNAUTHENTICATED") for _, a in after
                ),
            }
            assert got == {
                "round": n,
                "Earned at least those answered before": True,
                "in flight: neither Earned nor refused": [],
                "after the revocation's answer: UNAUTHENTICATED": AFTER_WAVE,
            }, after[:4]
        return t, earned

    t, earned = run(api, seeded.keys, scenario)
    written = [
        e["ref"]["key"]
        for e in entries(seeded.db_url, "earn")
        if e["ref"]["key"].startswith(f"rk-{t}-")
    ]
    assert sorted(written) == sorted(earned), "the journal's earns are exactly those Earned"
    verify(seeded.db_url)


# -- earning rules published while tills earn ------------------------------------------------

RULES_ROUNDS = 4
RULES_EARNS_AFTER = 2  # per till, each sent after the publication's answer came back
PURCHASE_MINOR = 10 * STEP_MINOR  # what each till's purchase spends


def _points_per_step(n: int) -> int:
    """Round ``n``'s new rules for fuel: a different price each round (the seed's is 1)."""
    return n + 2


async def _earn_settled(
    tills: Tills, member: str, reference: str, member_of: dict[str, str]
) -> Sent:
    """A fuel purchase, BUSY retried with the same reference (as a till would); noted in
    ``member_of``."""
    member_of[reference] = member
    return reference, await tills.settled(
        "fuel",
        "PostPurchase",
        reference=reference,
        member={"memberId": member},
        purchaseMinor=PURCHASE_MINOR,
        currency="RUB",
    )


def test_earning_rules_published_while_tills_earn_price_each_earn_by_the_version_in_force(
    api: str, seeded: Seeded
) -> None:
    """Eight fuel tills earn in a loop while the operator publishes new earning rules for
    fuel (PublishEarningRules, effective from now, a different pointsPerStep each round);
    then each till sends two more earns. Four rounds. Every answer is Earned once BUSY is
    retried (a publication that commits between an earn's pricing and its append makes it
    BUSY, a typed refusal); those sent after the publication's answer earn by the new
    rules. In the journal's order every fuel earn carries the version in force at its time
    among the versions written before it, and exactly the points that version gives; the
    journal's earns are exactly those Earned, and each member holds their points."""

    async def scenario(tills: Tills) -> tuple[str, dict[str, tuple[str, int]], list[int]]:
        t = tag()
        members = [f"er-{t}-{i}" for i in range(EARNING_TILLS)]
        for member in members:
            await tills.enroll(member)
        earned: dict[str, tuple[str, int]] = {}  # reference -> (member, points)
        member_of: dict[str, str] = {}  # reference -> member
        published: list[int] = []
        for n in range(RULES_ROUNDS):
            old, new = 10 * (_points_per_step(n) - 1), 10 * _points_per_step(n)

            async def publish(n: int = n) -> Answer:
                return await tills.call(
                    "operator",
                    "PublishEarningRules",
                    reference=f"er-rules-{t}-{n}",
                    partnerId="fuel",
                    effectiveFrom=format_time_us(now_us()),
                    currency="RUB",
                    pointsPerStep=_points_per_step(n),
                    stepMinor=STEP_MINOR,
                )

            def send(i: int, j: int, n: int = n) -> Awaitable[Sent]:
                return _earn_settled(tills, members[i], f"er-{t}-{n}-{i}-{j}", member_of)

            during, publication = await _sends_until(EARNING_TILLS, send, publish)
            assert publication.get("__typename") == "Recorded", publication
            published.append(int(publication["seq"]))
            after = await asyncio.gather(
                *(
                    _earn_settled(tills, member, f"er-{t}-{n}-after-{i}-{k}", member_of)
                    for i, member in enumerate(members)
                    for k in range(RULES_EARNS_AFTER)
                )
            )
            for reference, a in during + after:
                if a.get("__typename") == "Earned":
                    earned[reference] = (member_of[reference], int(a["points"]))
            odd = [a for _, a in during + after if a.get("__typename") != "Earned"]
            got = {
                "round": n,
                "answers": tally(a for _, a in during + after),
                "points while publishing": {
                    int(a["points"]) for _, a in during if a.get("__typename") == "Earned"
                }
                <= {old, new},
                "points after the publication": [int(a["points"]) for _, a in after],
            }
            assert got == {
                "round": n,
                "answers": {"Earned": len(during) + len(after)},
                "points while publishing": True,
                "points after the publication": [new] * len(after),
            }, odd[:4]
        return t, earned, published

    t, earned, published = run(api, seeded.keys, scenario)
    versions: list[tuple[int, int, EarningRules]] = []  # (effective from, version, rules)
    mispriced, written, publications = [], {}, []
    for entry in entries(seeded.db_url, "earning_rules", "earn"):
        meta = entry["meta"]
        if meta["partner"] != "fuel":
            continue
        if entry["kind"] == "earning_rules":
            rules = EarningRules.from_json(meta["rules"])
            versions.append((parse_time_us(meta["effective_from"]), meta["version"], rules))
            publications.append(entry["seq"])
            continue
        time_us = parse_time_us(entry["time"])
        _, version, rules = max(
            (v for v in versions if v[0] <= time_us), key=lambda v: (v[0], v[1])
        )
        due = points_for_purchase(rules, meta["purchase_minor"], time_us=time_us)
        if (meta["rules_version"], meta["points"]) != (version, due):
            mispriced.append((entry["seq"], meta["rules_version"], meta["points"], version, due))
        if entry["ref"]["key"].startswith(f"er-{t}-"):
            written[entry["ref"]["key"]] = (meta["member"], meta["points"])
    assert publications[1:] == published, "the seed's version, then one per round"
    assert [v for _, v, _ in versions] == list(range(1, RULES_ROUNDS + 2))
    assert mispriced == [], "(seq, version, points, version in force, its points)"
    assert written == earned, "the journal's earns are exactly those Earned, at their points"
    held = Counter[str]()
    for member, pts in earned.values():
        held[member] += pts
    assert [balance_of(seeded.db_url, m) for m in sorted(held)] == [held[m] for m in sorted(held)]
    assert len(held) == EARNING_TILLS
    verify(seeded.db_url)


# -- a member blocked while tills spend ------------------------------------------------------

BLOCK_ROUNDS = 4
SPENDS_AFTER = 2  # per till, each sent after the block's answer came back
SPENDER_POINTS = 20_000  # more than the tills can spend in every round (1 point each)


def _set_member_status(db_url: str, member: str, status: str, ref_key: str) -> Answer:
    """The operator's use case, in this process on a connection of its own (there is no
    GraphQL operation for it): what the journal answered, as an answer."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        outcome = set_member_status(Coalition(), conn, member, status, ref_key)
    if isinstance(outcome, Refusal):
        return {"__typename": typename_for(outcome.code.value), "code": outcome.code.value}
    return {"__typename": "Recorded", "seq": outcome.seq, "replayed": outcome.replayed}


def test_a_member_blocked_while_tills_spend_refuses_every_spend_after_it(
    api: str, seeded: Seeded
) -> None:
    """Eight fuel tills redeem one point of one member in a loop while the operator blocks
    that member (set_member_status in this process, on its own connection, in a thread);
    then each till sends two more redemptions; four rounds, the member unblocked before
    each. Every answer (BUSY retried) is Redeemed or refused MEMBER_BLOCKED (typed); those
    sent after the block's answer are all refused; every Redeemed one is in the journal
    before the block (seq); in the journal's order no redemption of the member lies between
    a block and its unblock; the journal's redemptions are exactly those Redeemed, and the
    member holds what they earned less what was redeemed."""

    async def scenario(tills: Tills) -> tuple[str, dict[str, Answer]]:
        t = tag()
        member = f"mb-{t}"
        await tills.enroll(member)
        await tills.earn(member, SPENDER_POINTS, f"mb-earn-{t}")
        redeemed: dict[str, Answer] = {}

        async def spend(reference: str) -> Sent:
            return reference, await tills.settled(
                "fuel", "RedeemAtTill", reference=reference, member={"memberId": member}, points=1
            )

        for n in range(BLOCK_ROUNDS):
            if n:
                unblocked = await asyncio.to_thread(
                    _set_member_status, seeded.db_url, member, "active", f"mb-unblock-{t}-{n}"
                )
                assert unblocked.get("__typename") == "Recorded", unblocked
            block = functools.partial(
                asyncio.to_thread,
                _set_member_status,
                seeded.db_url,
                member,
                "blocked",
                f"mb-block-{t}-{n}",
            )

            def send(i: int, j: int, n: int = n) -> Awaitable[Sent]:
                return spend(f"mb-{t}-{n}-{i}-{j}")

            during, blocked = await _sends_until(EARNING_TILLS, send, block)
            assert blocked.get("__typename") == "Recorded", blocked
            after = await asyncio.gather(
                *(
                    spend(f"mb-{t}-{n}-after-{i}-{k}")
                    for i in range(EARNING_TILLS)
                    for k in range(SPENDS_AFTER)
                )
            )
            won = {reference: a for reference, a in during if a.get("__typename") == "Redeemed"}
            redeemed.update(won)
            refused = [a for _, a in during + after if a.get("__typename") != "Redeemed"]
            got = {
                "round": n,
                "Redeemed at least those answered before": len(won) >= EARNED_BEFORE_SUSPENDING,
                "Redeemed: one point each": {int(a["points"]) for a in won.values()},
                "Redeemed after the block's seq": [
                    a for a in won.values() if int(a["seq"]) > int(blocked["seq"])
                ],
                "the others refused MEMBER_BLOCKED": all(
                    is_refusal(a, "MEMBER_BLOCKED") for a in refused
                ),
                "answers after the block": tally(a for _, a in after),
            }
            assert got == {
                "round": n,
                "Redeemed at least those answered before": True,
                "Redeemed: one point each": {1},
                "Redeemed after the block's seq": [],
                "the others refused MEMBER_BLOCKED": True,
                "answers after the block": {"MemberBlocked": len(after)},
            }, [a for a in refused if not is_refusal(a, "MEMBER_BLOCKED")][:4]
        return member, redeemed

    member, redeemed = run(api, seeded.keys, scenario)
    status, written, misplaced, blocks = "active", [], [], 0
    for entry in entries(seeded.db_url, "redeem", "member_status"):
        if entry["meta"].get("member") != member:
            continue
        if entry["kind"] == "member_status":
            status = entry["meta"]["status"]
            blocks += status == "blocked"
        else:
            written.append(entry["ref"]["key"])
            if status != "active":
                misplaced.append(entry["seq"])
    assert blocks == BLOCK_ROUNDS
    assert misplaced == [], "redemptions written while the member was blocked"
    assert sorted(written) == sorted(redeemed), "the journal's redemptions are those Redeemed"
    assert balance_of(seeded.db_url, member) == SPENDER_POINTS - len(redeemed)
    assert lowest_balance(seeded.db_url, member) >= 0
    verify(seeded.db_url)

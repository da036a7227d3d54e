"""Reversals across periods and terms, clawbacks, debts and currencies of other exponents:
the cases where a line changes direction or a rate must be the one already applied.

Each journal is small and its numbers are worked out by hand in the comments.
"""

from __future__ import annotations

from typing import Any

from settlement.journal_view import OPERATOR
from settlement.run import Run, compute_run
from settlement.terms import PartnerTerms
from tests.unit._memory_journal import (
    ALPHA_TERMS,
    BETA_TERMS,
    DEC_1_US,
    CoalitionWriter,
    MemoryJournal,
    day_us,
)


def terms(**changes: Any) -> PartnerTerms:
    return PartnerTerms.from_json({**ALPHA_TERMS.to_json(), **changes})


def writer(partners: dict[str, str], members: tuple[str, ...] = ("m1", "m2")) -> CoalitionWriter:
    w = CoalitionWriter(MemoryJournal(DEC_1_US))
    for partner, currency in partners.items():
        w.onboard(partner, currency)
    for member in members:
        w.enroll(member)
    return w


def settle(w: CoalitionWriter, start_seq: int, run_id: str = "p") -> Run:
    journal = w.journal
    return compute_run(
        journal.entries, run_id=run_id, period=run_id, start_seq=start_seq, end_seq=journal.size
    )


def redemption_points(run: Run) -> dict[tuple[str, str], int]:
    return {(x.payer, x.payee): x.points for x in run.lines if x.reason == "redemption"}


def test_a_refund_of_last_period_s_redemption_nets_with_this_period_s_reverse_line() -> None:
    # alpha and beta on the same terms (0.45 a point, EUR), so the two directions of their
    # redemption lines share a rate and a currency.
    w = writer({"alpha": "EUR", "beta": "EUR"})
    for partner in ("alpha", "beta"):
        w.publish_terms(partner, terms(issuance_price_per_point="0"), DEC_1_US)
    w.at(day_us(1)).earn("beta", "m1", 1000)
    w.earn("alpha", "m2", 1000)
    first = w.redeem("alpha", "m1", 400)  # period 1: beta owes alpha for 400
    start = w.journal.size
    w.at(day_us(20)).redeem("beta", "m2", 300)  # period 2: alpha owes beta for 300 …
    w.refund_redemption(first, 100)  # … and for the 100 of beta's it gives back.
    run = settle(w, start)
    # alpha owes beta 300 + 100 = 400 points × 0.45 = 180 cents.
    assert redemption_points(run) == {("alpha", "beta"): 400}
    assert [x.amount_minor for x in run.lines if x.reason == "redemption"] == [180]
    assert run.positions[("beta", "EUR")] > 0


def test_a_refunded_redemption_is_reversed_at_the_rate_it_was_paid() -> None:
    w = writer({"alpha": "EUR", "beta": "EUR"}, ("m1",))
    w.publish_terms("alpha", ALPHA_TERMS, DEC_1_US)
    w.publish_terms("beta", BETA_TERMS, DEC_1_US)
    w.at(day_us(1)).earn("beta", "m1", 1000)
    start = w.journal.size
    redemption = w.at(day_us(2)).redeem("alpha", "m1", 400)  # at 0.45: 180 cents
    w.at(day_us(3)).publish_terms("alpha", terms(redemption_rate_per_point="0.60"), day_us(3))
    w.at(day_us(4)).refund_redemption(redemption, 100)
    run = settle(w, start)
    # beta paid alpha 0.45 for each of the 400 points; 100 of them come back, so beta owes
    # 300 × 0.45 = 135 — not 400 × 0.45 − 100 × 0.60 = 120 at the rate of the refund day.
    owed = {(x.payer, x.payee): x.amount_minor for x in run.lines if x.reason == "redemption"}
    assert owed == {("beta", "alpha"): 135}


def test_a_line_counts_journal_entries_not_issuer_splits() -> None:
    w = writer({"alpha": "EUR", "beta": "EUR"}, ("m1",))
    w.publish_terms("alpha", ALPHA_TERMS, DEC_1_US)
    w.publish_terms("beta", BETA_TERMS, DEC_1_US)
    w.at(day_us(1)).earn("alpha", "m1", 100, expires_us=day_us(200))
    w.earn("beta", "m1", 100, expires_us=day_us(300))
    start = w.journal.size
    w.at(day_us(2)).redeem("alpha", "m1", 150)  # one entry: alpha's 100 and beta's 50
    run = settle(w, start)
    [fee] = [x for x in run.lines if x.reason == "operator_fee"]
    assert fee.points == 150
    assert (fee.first_seq, fee.last_seq) == (start, start)
    assert fee.entries == 1  # one redemption, though it took points of two issuers


def test_a_clawback_larger_than_the_period_s_issuance_reverses_the_charge() -> None:
    w = writer({"alpha": "EUR", "beta": "EUR"}, ("m1",))
    w.publish_terms("alpha", ALPHA_TERMS, DEC_1_US)
    w.publish_terms("beta", BETA_TERMS, DEC_1_US)
    earn = w.at(day_us(1)).earn("alpha", "m1", 1000, purchase_minor=100_000)
    start = w.journal.size
    w.at(day_us(20)).refund_purchase(earn, 60_000)  # 1000 × 60000 / 100000 = 600 back
    w.earn("alpha", "m1", 200)
    run = settle(w, start)
    # alpha issued 200 and took back 600: the coalition returns 400 × 0.05 = 20 cents.
    [line] = run.lines
    assert (line.payer, line.payee, line.reason, line.points, line.amount_minor) == (
        OPERATOR,
        "alpha",
        "issuance",
        400,
        20,
    )
    assert run.positions == {("alpha", "EUR"): 20, (OPERATOR, "EUR"): -20}


def test_a_clawback_of_spent_points_is_a_debt_the_next_earn_repays() -> None:
    w = writer({"alpha": "EUR", "beta": "EUR"}, ("m1",))
    w.publish_terms("alpha", ALPHA_TERMS, DEC_1_US)
    w.publish_terms("beta", BETA_TERMS, DEC_1_US)
    earn = w.at(day_us(1)).earn("alpha", "m1", 100, purchase_minor=10_000)
    w.redeem("beta", "m1", 100)
    start = w.journal.size
    w.at(day_us(5)).refund_purchase(earn, 10_000)  # 100 points back, all already spent
    repay = w.earn("alpha", "m1", 150)  # repays the debt of 100, opens a lot of 50
    assert w.journal.entry(repay)["postings"][1]["lot"]["amount"] == 50
    w.redeem("beta", "m1", 50)
    run = settle(w, start)
    points = {(x.payer, x.payee, x.reason): x.points for x in run.lines}
    # issuance nets 150 − 100 = 50; the 50 redeemed now are the new lot's, alpha's.
    assert points[("alpha", OPERATOR, "issuance")] == 50
    assert points[("alpha", "beta", "redemption")] == 50


def test_conversion_respects_the_currencies_minor_units() -> None:
    # kappa settles in yen (no minor unit); the rate recorded is 160 JPY for 1 EUR.
    w = writer({"alpha": "EUR", "kappa": "JPY"}, ("m1",))
    w.publish_terms("alpha", terms(issuance_price_per_point="0", operator_fee_bps=0), DEC_1_US)
    w.publish_terms("kappa", terms(issuance_price_per_point="0", operator_fee_bps=0), DEC_1_US)
    w.record_fx_rate("p", "EUR", "JPY", "160")
    start = w.journal.size
    w.at(day_us(1)).earn("kappa", "m1", 1000)
    w.redeem("alpha", "m1", 1000)
    run = settle(w, start)
    # kappa owes alpha 1000 × 0.45 = 450 cents = 4.50 EUR = 720 JPY.
    [conversion] = run.conversions
    assert (conversion.from_minor, conversion.to_minor) == (450, 720)
    assert run.positions[("kappa", "JPY")] == -720


def test_points_of_a_member_in_debt_still_expire_into_breakage() -> None:
    # coalition/refunds.py claws back only unexpired lots, so a clawback can leave a debt
    # while expired points wait in a lot for the expiry job; the job's entry
    # (coalition.expiry._expiry) then debits a balance the debt has already used up.
    w = writer({"alpha": "EUR", "beta": "EUR"}, ("m1",))
    w.publish_terms("alpha", ALPHA_TERMS, DEC_1_US)
    w.publish_terms("beta", BETA_TERMS, DEC_1_US)
    earn = w.at(day_us(1)).earn("alpha", "m1", 100, expires_us=day_us(5), purchase_minor=10_000)
    w.earn("beta", "m1", 100, expires_us=day_us(10))
    w.at(day_us(3)).redeem("beta", "m1", 100)  # first-expiring-first: alpha's lot
    w.at(day_us(11)).refund_purchase(earn, 10_000)  # 100 back, no unexpired lot: a debt
    start = w.journal.size
    expired = w.expire(day_us(11))  # beta's 100 points expired on day 10
    run = settle(w, start)
    assert len(expired) == 1, "the expiry entry was refused: insufficient_balance"
    # The coalition owes beta 100 × 0.04 × 0.25 = 1 cent of breakage.
    assert [(x.payee, x.reason, x.points) for x in run.lines] == [("beta", "breakage", 100)]

"""Settlement on a hand-computed period: three partners, a dozen redemptions, fees, a
refund of each kind, an expiry and a partner settling in another currency.

The story is ``january_story`` in _memory_journal.py; every number below is worked out
by hand from it, in the comments, never by calling settlement's own arithmetic. Rates
are minor units (cents, pence) per point.

Terms (all version 1):      issuance  redemption  fee     breakage share  currency
    alpha                   0.05      0.45        150 bps 0.5             EUR
    beta                    0.04      0.37        200 bps 0.25            EUR
    gamma                   0.02      0.333       100 bps 0.4             GBP
Exchange rates recorded for run 2027-01: GBP→EUR 1.17, EUR→GBP 0.85.

Points redeemed in January, by issuer → shop (lots taken first-expiring-first):
    r1  m1 700 at alpha: beta 500, alpha 200       r7  m4 250 at beta: coalition 100,
    r2  m1 300 at gamma: alpha 300                     alpha 150
    r3  m2 200 at beta: alpha 200                  r8  m1 400 at beta: alpha 400
    r5  m3 400 at alpha: gamma 250, beta 150       r9  m3 200 at beta: beta 200
    r6  m3 300 at gamma: beta 300                  r10 m4 100 at gamma: alpha 100
    c11 m3 250 captured at gamma: beta 250         r12 m1 100 at gamma: alpha 100
    r4  m2 500 at alpha: gamma 500 (after alpha's lot expired)
    rf1 refund of 300 of r1 at alpha, last-taken lot first: alpha 200, beta 100
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from settlement.journal_view import OPERATOR
from settlement.money import half_even_to_int
from settlement.obligations import MissingTerms
from settlement.run import Conversion, Line, Payment, Run, SettlementError, compute_run
from settlement.terms import PartnerTerms
from tests.unit._memory_journal import (
    ALPHA_TERMS,
    BETA_TERMS,
    DEC_1_US,
    RUN_ID,
    CoalitionWriter,
    MemoryJournal,
    Story,
    day_us,
    january_story,
)


def settle(story: Story, mode: str | None = None, run_id: str = RUN_ID) -> Run:
    return compute_run(
        iter(story.journal.entries),
        run_id=run_id,
        period="2027-01",
        start_seq=story.start_seq,
        end_seq=story.end_seq,
        mode=mode,
    )


@pytest.fixture(scope="module")
def story() -> Story:
    return january_story()


@pytest.fixture(scope="module")
def run(story: Story) -> Run:
    return settle(story)


def summary(line: Line) -> tuple[str, str, str, str, str, int, int]:
    return (
        line.payer,
        line.payee,
        line.reason,
        str(line.rate_per_point),
        line.currency,
        line.points,
        line.amount_minor,
    )


def test_lines_are_priced_and_rounded_as_worked_out_by_hand(run: Run) -> None:
    assert [summary(line) for line in run.lines] == [
        # breakage: 100 of alpha's points expired (x1) × 0.05 × 0.5 = 2.5 → half-even 2.
        ("coalition", "alpha", "breakage", "0.025", "EUR", 100, 2),
        # issuance in January only (e0 was December's): alpha e1 1000 + e4 300 = 1300 ×
        # 0.05 = 65; beta e2 500 + e5 1200 − clawback 100 = 1600 × 0.04 = 64;
        # gamma e3 800 + e6 250 = 1050 × 0.02 = 21; the coalition's bonus is not charged.
        ("alpha", "coalition", "issuance", "0.05", "EUR", 1300, 65),
        ("beta", "coalition", "issuance", "0.04", "EUR", 1600, 64),
        ("gamma", "coalition", "issuance", "0.02", "GBP", 1050, 21),
        # fees on everything redeemed at the shop, its own points included:
        # alpha 700 + 400 − 300 + 500 = 1300 × 0.45 × 1.5% = 8.775;
        # beta 200 + 250 + 400 + 200 = 1050 × 0.37 × 2% = 7.77. EUR total 16.545 → 17;
        # floors 8 + 7 = 15, the two residual cents go to .775 then .77: 9 and 8.
        ("alpha", "coalition", "operator_fee", "0.00675", "EUR", 1300, 9),
        ("beta", "coalition", "operator_fee", "0.0074", "EUR", 1050, 8),
        # gamma 300 + 300 + 100 + 250 + 100 = 1050 × 0.333 × 1% = 3.4965 → 3.
        ("gamma", "coalition", "operator_fee", "0.00333", "GBP", 1050, 3),
        # EUR redemptions: alpha→beta 200 + 150 + 400 = 750 × 0.37 = 277.5;
        # beta→alpha 500 + 150 − 100 = 550 × 0.45 = 247.5; coalition→beta 100 × 0.37 = 37;
        # gamma→alpha 250 + 500 = 750 × 0.45 = 337.5. Total 899.5 → 900 (half-even);
        # floors 898; two residual cents to the earliest of the three .5 remainders.
        ("alpha", "beta", "redemption", "0.37", "EUR", 750, 278),
        ("beta", "alpha", "redemption", "0.45", "EUR", 550, 248),
        ("coalition", "beta", "redemption", "0.37", "EUR", 100, 37),
        ("gamma", "alpha", "redemption", "0.45", "EUR", 750, 337),
        # GBP redemptions: alpha→gamma 300 + 100 + 100 = 500 × 0.333 = 166.5;
        # beta→gamma 300 + 250 = 550 × 0.333 = 183.15. Total 349.65 → 350; floors 349;
        # the residual penny to the larger remainder (.5): 167 and 183.
        ("alpha", "gamma", "redemption", "0.333", "GBP", 500, 167),
        ("beta", "gamma", "redemption", "0.333", "GBP", 550, 183),
    ]


def test_self_redemptions_make_no_line_but_pay_the_fee(run: Run) -> None:
    # alpha's own 200 (r1) were refunded (rf1), beta's own 200 (r9) stand: neither is an
    # obligation between partners, both are in their shop's fee line (see above).
    assert not [line for line in run.lines if line.payer == line.payee]
    pairs = {(line.payer, line.payee) for line in run.lines if line.reason == "redemption"}
    assert pairs == {
        ("alpha", "beta"),
        ("beta", "alpha"),
        ("coalition", "beta"),
        ("gamma", "alpha"),
        ("alpha", "gamma"),
        ("beta", "gamma"),
    }


def test_lines_name_the_entries_and_terms_they_come_from(run: Run, story: Story) -> None:
    s = story.seqs
    by_pair = {(line.payer, line.payee, line.reason): line for line in run.lines}
    beta_alpha = by_pair[("beta", "alpha", "redemption")]
    assert (beta_alpha.first_seq, beta_alpha.last_seq) == (s["r1"], s["rf1"])
    assert beta_alpha.terms_versions == (("alpha", 1),)
    issuance = by_pair[("beta", OPERATOR, "issuance")]
    assert (issuance.first_seq, issuance.last_seq) == (s["e2"], s["rfe"])
    assert by_pair[(OPERATOR, "alpha", "breakage")].first_seq == s["x1"]


def test_rounding_ties_out_where_per_line_rounding_would_not(run: Run) -> None:
    # EUR: exact 899.5 is due as 900; per line half-even gives 278 + 248 + 37 + 338 = 901.
    # GBP: exact 349.65 is due as 350; per line half-even gives 166 + 183 = 349.
    cases = {"EUR": (Decimal("899.5"), 901, 900), "GBP": (Decimal("349.65"), 349, 350)}
    for currency, (exact_total, naive_total, due_total) in cases.items():
        lines = [x for x in run.lines if x.reason == "redemption" and x.currency == currency]
        exact = [line.points * line.rate_per_point for line in lines]
        assert sum(exact) == exact_total
        assert sum(half_even_to_int(amount) for amount in exact) == naive_total
        assert sum(line.amount_minor for line in lines) == due_total
        for line, amount in zip(lines, exact, strict=True):
            assert abs(line.amount_minor - amount) < 1


def test_conversions_use_the_rates_recorded_for_the_run(run: Run) -> None:
    assert run.conversions == (
        # gamma pays alpha 337 EUR cents: 337 × 0.85 = 286.45 → 286 pence.
        Conversion("gamma", 10, "EUR", "GBP", Decimal("0.85"), 337, 286),
        # alpha and beta pay gamma in GBP: 167 × 1.17 = 195.39 → 195; 183 × 1.17 = 214.11 → 214.
        Conversion("alpha", 11, "GBP", "EUR", Decimal("1.17"), 167, 195),
        Conversion("beta", 12, "GBP", "EUR", Decimal("1.17"), 183, 214),
    )


def test_net_positions_as_worked_out_by_hand_and_summing_to_zero(run: Run) -> None:
    assert run.positions == {
        # alpha: +2 breakage − 65 issuance − 9 fee − 278 to beta + 248 from beta
        #        + 337 from gamma − 195 (167 GBP to gamma, converted) = +40
        ("alpha", "EUR"): 40,
        # beta: −64 − 8 + 278 − 248 + 37 from the coalition − 214 (183 GBP to gamma) = −219
        ("beta", "EUR"): -219,
        # gamma: −21 − 3 − 286 (337 EUR to alpha) + 167 + 183 = +40
        ("gamma", "GBP"): 40,
        # the coalition: −2 + 65 + 64 + 9 + 8 − 37 − 337 + 195 + 214 = +179 EUR, and in
        # GBP +21 + 3 + 286 − 167 − 183 = −40: its clearing stands between the currencies.
        (OPERATOR, "EUR"): 179,
        (OPERATOR, "GBP"): -40,
    }
    for currency in ("EUR", "GBP"):
        assert sum(v for (_, c), v in run.positions.items() if c == currency) == 0


def test_multilateral_payments_settle_each_partner_with_the_clearing(run: Run) -> None:
    assert run.mode == "multilateral"
    assert run.payments == (
        Payment("2027-01-00001", "beta", OPERATOR, "EUR", 219),
        Payment("2027-01-00002", OPERATOR, "alpha", "EUR", 40),
        Payment("2027-01-00003", OPERATOR, "gamma", "GBP", 40),
    )
    # 1048 EUR cents of obligations (2 + 65 + 64 + 9 + 8 + 278 + 248 + 37 + 337) and 374
    # pence (21 + 3 + 167 + 183) move as 259 and 40.
    assert run.gross_minor == {"EUR": 1048, "GBP": 374}
    assert run.net_minor == {"EUR": 259, "GBP": 40}


def test_bilateral_payments_net_each_pair_through_the_clearing_across_currencies(
    story: Story,
) -> None:
    run = settle(story, mode="bilateral")
    assert run.mode == "bilateral"
    assert run.payments == (
        # alpha and beta: 278 − 248 = 30 from alpha to beta.
        Payment("2027-01-00001", "alpha", "beta", "EUR", 30),
        # beta and the coalition: 64 + 8 − 37 + 214 (its GBP debt to gamma, in EUR) = 249.
        Payment("2027-01-00002", "beta", OPERATOR, "EUR", 249),
        # the coalition and alpha: alpha owes it 65 + 9 + 195 (its GBP debt to gamma, in
        # EUR) = 269 and is owed 2 + 337 (gamma's EUR debt, through the clearing) = 339: 70.
        Payment("2027-01-00003", OPERATOR, "alpha", "EUR", 70),
        # the coalition and gamma: 167 + 183 owed to it, 21 + 3 + 286 owed by it: 40.
        Payment("2027-01-00004", OPERATOR, "gamma", "GBP", 40),
    )


@pytest.mark.parametrize("mode", ["multilateral", "bilateral"])
def test_payments_settle_every_position_exactly(story: Story, mode: str) -> None:
    run = settle(story, mode=mode)
    settled: dict[tuple[str, str], int] = {}
    for p in run.payments:
        assert p.amount_minor > 0 and p.payer != p.payee
        settled[(p.payee, p.currency)] = settled.get((p.payee, p.currency), 0) + p.amount_minor
        settled[(p.payer, p.currency)] = settled.get((p.payer, p.currency), 0) - p.amount_minor
    assert {k: v for k, v in settled.items() if v} == run.positions
    assert len({p.end_to_end_id for p in run.payments}) == len(run.payments)


def test_every_redeemed_point_is_accounted_to_exactly_one_issuer(run: Run, story: Story) -> None:
    # 12 redemptions of 700 + 300 + 200 + 400 + 300 + 250 + 400 + 200 + 100 + 250 + 100
    # + 500 = 3700 points, less the 300 refunded: 3400, each from one issuer's lot.
    redeemed = sum(r.points - r.refunded_points for r in story.writer.redemptions.values())
    assert redeemed == 3400
    fee_points = sum(line.points for line in run.lines if line.reason == "operator_fee")
    cross = sum(line.points for line in run.lines if line.reason == "redemption")
    own = 200  # r9: beta's own points at beta (alpha's own 200 in r1 were refunded)
    assert fee_points == redeemed
    assert cross + own == redeemed


def test_the_run_is_the_same_bytes_from_the_same_entries(story: Story) -> None:
    first, second = settle(story), settle(story)
    assert first.to_bytes() == second.to_bytes()
    assert first == second


def test_the_period_cut_excludes_what_came_before_and_after(story: Story) -> None:
    # Cut just before r4 (the last entry): gamma→alpha loses r4's 500 points.
    run = compute_run(
        story.journal.entries,
        run_id=RUN_ID,
        period="2027-01",
        start_seq=story.start_seq,
        end_seq=story.seqs["r4"],
    )
    by_pair = {(x.payer, x.payee, x.reason): x.points for x in run.lines}
    assert by_pair[("gamma", "alpha", "redemption")] == 250
    assert by_pair[("alpha", OPERATOR, "operator_fee")] == 800
    # From the start of the journal, December's 400 points of alpha are charged too.
    whole = compute_run(
        story.journal.entries, run_id=RUN_ID, period="all", start_seq=0, end_seq=story.end_seq
    )
    by_pair = {(x.payer, x.payee, x.reason): x.points for x in whole.lines}
    assert by_pair[("alpha", OPERATOR, "issuance")] == 1700


def test_a_missing_exchange_rate_is_named(story: Story) -> None:
    with pytest.raises(SettlementError, match="fx_rate for run 2027-02"):
        settle(story, run_id="2027-02")


def test_a_cut_before_the_start_is_refused(story: Story) -> None:
    with pytest.raises(SettlementError):
        compute_run(story.journal.entries, run_id="x", period="x", start_seq=5, end_seq=4)


def test_redemption_at_a_partner_without_terms_in_force_is_refused() -> None:
    journal = MemoryJournal(DEC_1_US)
    w = CoalitionWriter(journal)
    for partner in ("alpha", "beta"):
        w.onboard(partner, "EUR")
    w.publish_terms("alpha", ALPHA_TERMS, DEC_1_US)
    w.publish_terms("beta", BETA_TERMS, day_us(10))  # in force only from January 10
    w.enroll("m1")
    w.at(day_us(1)).earn("alpha", "m1", 100)
    w.redeem("beta", "m1", 50)
    with pytest.raises(MissingTerms, match="beta"):
        compute_run(journal.entries, run_id="x", period="x", start_seq=0, end_seq=journal.size)


def _two_partner_journal(terms: dict[str, Any]) -> MemoryJournal:
    journal = MemoryJournal(DEC_1_US)
    w = CoalitionWriter(journal)
    for partner in ("alpha", "beta"):
        w.onboard(partner, "EUR")
        w.publish_terms(
            partner, PartnerTerms.from_json({**ALPHA_TERMS.to_json(), **terms}), DEC_1_US
        )
    w.enroll("m1")
    w.at(day_us(1)).earn("alpha", "m1", 100)
    w.redeem("beta", "m1", 60)
    return journal


def test_the_mode_is_bilateral_only_when_every_partner_s_terms_say_so() -> None:
    bilateral = _two_partner_journal({"mode": "bilateral"})
    run = compute_run(
        bilateral.entries, run_id="x", period="x", start_seq=0, end_seq=bilateral.size
    )
    assert run.mode == "bilateral"
    # alpha owes beta 60 × 0.45 = 27 directly; issuance 100 × 0.05 = 5 and the fee
    # 60 × 0.00675 = 0.405 → 0 leave only alpha's 5 for the coalition.
    assert [(p.payer, p.payee, p.amount_minor) for p in run.payments] == [
        ("alpha", "beta", 27),
        ("alpha", OPERATOR, 5),
    ]
    multilateral = _two_partner_journal({})
    run = compute_run(
        multilateral.entries, run_id="x", period="x", start_seq=0, end_seq=multilateral.size
    )
    assert run.mode == "multilateral"


def test_a_zero_rate_makes_no_line() -> None:
    journal = _two_partner_journal({"issuance_price_per_point": "0", "operator_fee_bps": 0})
    run = compute_run(journal.entries, run_id="x", period="x", start_seq=0, end_seq=journal.size)
    assert [summary(line) for line in run.lines] == [
        ("alpha", "beta", "redemption", "0.45", "EUR", 60, 27)
    ]


def test_each_line_lists_the_entries_behind_it(run: Run, story: Story) -> None:
    from settlement.run import entries_behind

    for index, line in enumerate(run.lines):
        seqs = entries_behind(iter(story.journal.entries), run, index)
        assert len(seqs) == line.entries
        assert (seqs[0], seqs[-1]) == (line.first_seq, line.last_seq)
        assert all(story.start_seq <= seq < story.end_seq for seq in seqs)

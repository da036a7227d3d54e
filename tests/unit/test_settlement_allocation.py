"""The allocation rule: floor every line, round the total half-even, hand the residual
units to the largest remainders (ties: the earlier line)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from settlement.allocation import allocate


def d(*values: str) -> list[Decimal]:
    return [Decimal(v) for v in values]


@pytest.mark.parametrize(
    ("exact", "expected"),
    [
        # 10.4 + 20.4 + 30.4 = 61.2 → 61; naive rounding gives 60. Ties go to the first.
        (d("10.4", "20.4", "30.4"), [11, 20, 30]),
        # 0.5 + 0.5 = 1 → one unit, to the earlier line; naive half-even gives 0 + 0.
        (d("0.5", "0.5"), [1, 0]),
        # 2.5 alone rounds half-even to 2; 3.5 alone to 4.
        (d("2.5"), [2]),
        (d("3.5"), [4]),
        # 1.25 + 1.25 = 2.5 → 2: both floors, no residual (half-even at the total).
        (d("1.25", "1.25"), [1, 1]),
        # 0.3 + 0.3 + 0.3 = 0.9 → 1, naive gives 0: the unit goes to the first.
        (d("0.3", "0.3", "0.3"), [1, 0, 0]),
        # largest remainder wins regardless of position: .9 beats .6 beats .5.
        (d("1.5", "2.6", "3.9"), [1, 3, 4]),
        # whole amounts are untouched.
        (d("7", "0", "12"), [7, 0, 12]),
        ([], []),
    ],
)
def test_allocate_examples(exact: list[Decimal], expected: list[int]) -> None:
    assert allocate(exact) == expected


def test_the_worked_rounding_cases_differ_from_naive_per_line_rounding() -> None:
    # The settlement run's two redemption groups of the January story.
    eur = d("277.5", "247.5", "37", "337.5")
    gbp = d("166.5", "183.15")
    assert allocate(eur) == [278, 248, 37, 337]  # 900; per line half-even: 901
    assert allocate(gbp) == [167, 183]  # 350; per line half-even: 349


amounts = st.decimals(
    min_value=0, max_value=10**12, places=6, allow_nan=False, allow_infinity=False
)


@given(st.lists(amounts, max_size=40))
def test_allocation_ties_out_and_stays_within_a_unit_of_each_line(
    exact: list[Decimal],
) -> None:
    allocated = allocate(exact)
    total = sum((Fraction(a) for a in exact), Fraction(0))
    # The total is the exact sum rounded half to even, computed here in rationals.
    floor, remainder = divmod(total, 1)
    expected_total = int(floor) + (
        1 if remainder > Fraction(1, 2) or (remainder == Fraction(1, 2) and floor % 2) else 0
    )
    assert sum(allocated) == expected_total
    for amount, got in zip(exact, allocated, strict=True):
        assert Fraction(amount) - 1 < got < Fraction(amount) + 1
    # Units go to larger remainders first: a line that got one never has a smaller
    # remainder than a line that did not (ties: the earlier line got it).
    bumped = [
        (Fraction(a) - int(a), i)
        for i, (a, got) in enumerate(zip(exact, allocated, strict=True))
        if got > int(a)
    ]
    kept = [
        (Fraction(a) - int(a), i)
        for i, (a, got) in enumerate(zip(exact, allocated, strict=True))
        if got == int(a)
    ]
    for b_rem, b_i in bumped:
        for k_rem, k_i in kept:
            assert b_rem > k_rem or (b_rem == k_rem and b_i < k_i)


@given(st.lists(amounts, min_size=1, max_size=20), st.randoms(use_true_random=False))
def test_allocation_of_a_permutation_is_the_same_amounts_up_to_ties(
    exact: list[Decimal], random: Random
) -> None:
    # Distinct remainders make the rule order-free: each line gets the same amount.
    distinct = [a + Decimal(i) / Decimal(10**9) for i, a in enumerate(exact)]
    order = list(range(len(distinct)))
    random.shuffle(order)
    shuffled = [distinct[i] for i in order]
    by_line = dict(zip(order, allocate(shuffled), strict=True))
    assert [by_line[i] for i in range(len(distinct))] == allocate(distinct)

"""Rounding that ties out: amounts rounded once per line, residual by largest remainder.

Each line's exact amount (points × an exact rate) is cut to whole minor units; the
group's total is the half-even rounding of the exact sum; the units that cutting lost are
handed, one each, to the lines that lost the most (ties: the earlier line). So every line
is within one minor unit of its exact value and the lines add up to the total exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_FLOOR, Decimal

from settlement.money import half_even_to_int


def allocate(exact_amounts: Sequence[Decimal]) -> list[int]:
    floors = [int(a.to_integral_value(rounding=ROUND_FLOOR)) for a in exact_amounts]
    total = half_even_to_int(sum(exact_amounts, Decimal(0)))
    residual = total - sum(floors)
    assert 0 <= residual <= len(floors), "the residual is less than one unit per line"
    by_remainder = sorted(range(len(floors)), key=lambda i: (-(exact_amounts[i] - floors[i]), i))
    for index in by_remainder[:residual]:
        floors[index] += 1
    return floors

"""Rates, roundings and earning rules: pure functions, checked without a database."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from coalition.earning import (
    CAMPAIGNS_MAX,
    CATEGORIES_MAX,
    MULTIPLIER_MAX,
    Campaign,
    EarningRules,
    points_for_purchase,
)
from ledger.timefmt import format_time_us, parse_time_us
from ledger.units import AMOUNT_MAX
from settlement.money import InvalidRate, floor_to_int, half_even_to_int, parse_rate

NOON_US = parse_time_us("2026-03-10T12:00:00.000000Z")
SPRING_STARTS = "2026-03-01T00:00:00.000000Z"
SPRING_ENDS = "2026-04-01T00:00:00.000000Z"


def rules_json(**overrides: Any) -> dict[str, Any]:
    """1 point per 100 RUB (10,000 kopecks), no multipliers, no cap — unless overridden."""
    data: dict[str, Any] = {
        "currency": "RUB",
        "points_per_step": 1,
        "step_minor": 10_000,
        "category_multipliers": {},
        "campaigns": [],
        "cap_points": None,
    }
    data.update(overrides)
    return data


def rules(**overrides: Any) -> EarningRules:
    return EarningRules.from_json(rules_json(**overrides))


def campaign_json(
    multiplier: str = "2", starts: str = SPRING_STARTS, ends: str = SPRING_ENDS
) -> dict[str, Any]:
    return {"name": "spring", "multiplier": multiplier, "starts": starts, "ends": ends}


def exact_points(amount_minor: int, points_per_step: int, step_minor: int, *rates: str) -> int:
    """The oracle: floor of the product computed in exact rationals."""
    product = Fraction(amount_minor * points_per_step, step_minor)
    for rate in rates:
        product *= Fraction(rate)
    return int(product)  # product ≥ 0, so truncation is the floor


# --- money: parse_rate ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", Decimal(0)),
        ("0.01", Decimal("0.01")),
        ("1.5", Decimal("1.5")),
        ("100", Decimal(100)),
        ("0.000000000001", Decimal("1e-12")),  # twelve decimal places: the finest allowed
        ("123456789.123456789", Decimal("123456789.123456789")),  # eighteen digits
    ],
)
def test_parse_rate_accepts_decimal_strings(text: str, value: Decimal) -> None:
    parsed = parse_rate(text, "rate")
    assert parsed == value
    assert isinstance(parsed, Decimal)


@pytest.mark.parametrize("not_a_string", [0.5, 1, Decimal("0.5"), None, True, ["1"]])
def test_parse_rate_refuses_anything_but_a_string(not_a_string: object) -> None:
    # A float has already lost the exact value by the time it arrives.
    with pytest.raises(InvalidRate, match="decimal string"):
        parse_rate(not_a_string, "rate")


@pytest.mark.parametrize("text", ["", "abc", "1,5", "1.2.3", "0x10"])
def test_parse_rate_refuses_what_is_not_a_decimal(text: str) -> None:
    with pytest.raises(InvalidRate, match="not a decimal"):
        parse_rate(text, "rate")


@pytest.mark.parametrize("text", ["NaN", "sNaN", "Infinity", "-Infinity", "-1", "-0.000001"])
def test_parse_rate_refuses_non_finite_and_negative(text: str) -> None:
    with pytest.raises(InvalidRate, match="finite and not negative"):
        parse_rate(text, "rate")


@pytest.mark.parametrize(
    "text",
    [
        "0.0000000000001",  # thirteen decimal places
        "1e-13",
        "1234567890.123456789",  # nineteen digits
    ],
)
def test_parse_rate_refuses_excess_precision(text: str) -> None:
    with pytest.raises(InvalidRate, match="precision"):
        parse_rate(text, "rate")


def test_parse_rate_maximum_is_inclusive() -> None:
    assert parse_rate("100", "rate", maximum=Decimal(100)) == 100
    with pytest.raises(InvalidRate, match="must not exceed 100"):
        parse_rate("100.000000000001", "rate", maximum=Decimal(100))


def test_parse_rate_names_the_rate_and_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="multiplier of books"):
        parse_rate("-1", "multiplier of books")


# --- money: roundings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "rounded"),
    [
        ("0", 0),
        ("2", 2),
        ("2.5", 2),
        ("2.999999999999", 2),
        ("0.999999999999", 0),
        ("-2", -2),
        ("-2.5", -2),  # toward zero, as documented, not toward −∞
        ("-2.9", -2),
    ],
)
def test_floor_to_int_rounds_toward_zero(value: str, rounded: int) -> None:
    result = floor_to_int(Decimal(value))
    assert result == rounded
    assert type(result) is int


@pytest.mark.parametrize(
    ("value", "rounded"),
    [
        ("0.5", 0),
        ("1.5", 2),
        ("2.5", 2),
        ("3.5", 4),
        ("2.4999999", 2),
        ("2.5000001", 3),
        ("-0.5", 0),
        ("-1.5", -2),
        ("-2.5", -2),
        ("-2.5000001", -3),
        ("7", 7),
    ],
)
def test_half_even_to_int_rounds_ties_to_even(value: str, rounded: int) -> None:
    result = half_even_to_int(Decimal(value))
    assert result == rounded
    assert type(result) is int


# --- earning rules: JSON ------------------------------------------------------------


def test_rules_parse_and_round_trip() -> None:
    data = rules_json(
        points_per_step=3,
        category_multipliers={"books": "1.5", "fuel": "0.5"},
        campaigns=[campaign_json("2.25")],
        cap_points=500,
    )
    parsed = EarningRules.from_json(data)
    assert parsed == EarningRules(
        currency="RUB",
        points_per_step=3,
        step_minor=10_000,
        category_multipliers={"books": Decimal("1.5"), "fuel": Decimal("0.5")},
        campaigns=(
            Campaign(
                "spring", Decimal("2.25"), parse_time_us(SPRING_STARTS), parse_time_us(SPRING_ENDS)
            ),
        ),
        cap_points=500,
    )
    assert parsed.to_json() == data
    assert EarningRules.from_json(parsed.to_json()) == parsed


def test_rules_defaults_round_trip() -> None:
    bare = EarningRules.from_json({"currency": "EUR", "points_per_step": 1, "step_minor": 100})
    assert bare == EarningRules("EUR", 1, 100)
    assert EarningRules.from_json(bare.to_json()) == bare
    assert bare.to_json()["cap_points"] is None


def test_campaign_instants_are_written_as_readable_text() -> None:
    written = rules(campaigns=[campaign_json()]).to_json()["campaigns"][0]
    assert written["starts"] == SPRING_STARTS
    assert written["ends"] == SPRING_ENDS


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"currency": None}, "currency"),
        ({"currency": "RU"}, "currency"),
        ({"currency": "RUBL"}, "currency"),
        ({"currency": "rub"}, "currency"),
        ({"currency": 643}, "currency"),
        ({"points_per_step": None}, "points_per_step"),
        ({"points_per_step": -1}, "points_per_step"),
        ({"points_per_step": 1.0}, "points_per_step"),
        ({"points_per_step": "1"}, "points_per_step"),
        ({"points_per_step": True}, "points_per_step"),
        ({"step_minor": 0}, "step_minor"),
        ({"step_minor": -10_000}, "step_minor"),
        ({"step_minor": 10_000.0}, "step_minor"),
        ({"step_minor": True}, "step_minor"),
        ({"step_minor": None}, "step_minor"),
        ({"cap_points": -1}, "cap_points"),
        ({"cap_points": 10.0}, "cap_points"),
        ({"cap_points": "10"}, "cap_points"),
        ({"cap_points": False}, "cap_points"),
        (
            {"category_multipliers": {f"c{i}": "1" for i in range(CATEGORIES_MAX + 1)}},
            "at most",
        ),
        ({"campaigns": [campaign_json()] * (CAMPAIGNS_MAX + 1)}, "at most"),
        ({"campaigns": ["spring"]}, "needs a name"),
        (
            {"campaigns": [{"multiplier": "2", "starts": SPRING_STARTS, "ends": SPRING_ENDS}]},
            "needs a name",
        ),
        ({"campaigns": [{**campaign_json(), "name": 7}]}, "needs a name"),
        ({"campaigns": [campaign_json(ends=SPRING_STARTS)]}, "ends before it starts"),
        (
            {"campaigns": [campaign_json(starts=SPRING_ENDS, ends=SPRING_STARTS)]},
            "ends before it starts",
        ),
        ({"campaigns": [campaign_json(starts="2026-03-01")]}, "not of the form"),
        ({"campaigns": [{**campaign_json(), "ends": None}]}, "not of the form"),
        ({"campaigns": [campaign_json(ends="2026-02-30T00:00:00.000000Z")]}, "not a valid date"),
    ],
)
def test_rules_validation_errors(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EarningRules.from_json(rules_json(**overrides))


@pytest.mark.parametrize(
    ("multiplier", "message"),
    [
        (1.5, "decimal string"),
        (2, "decimal string"),
        (None, "decimal string"),
        ("two", "not a decimal"),
        ("-1", "not negative"),
        ("NaN", "finite"),
        ("100.5", "must not exceed 100"),
        ("1.0000000000001", "precision"),
    ],
)
def test_rules_refuse_bad_multipliers(multiplier: object, message: str) -> None:
    with pytest.raises(InvalidRate, match=message):
        rules(category_multipliers={"books": multiplier})
    with pytest.raises(InvalidRate, match=message):
        rules(campaigns=[{**campaign_json(), "multiplier": multiplier}])


def test_rules_accept_the_limits() -> None:
    at_limits = rules(
        points_per_step=0,
        step_minor=1,
        cap_points=0,
        category_multipliers={f"c{i}": str(MULTIPLIER_MAX) for i in range(CATEGORIES_MAX)},
        campaigns=[campaign_json("0")] * CAMPAIGNS_MAX,
    )
    assert len(at_limits.category_multipliers) == CATEGORIES_MAX
    assert len(at_limits.campaigns) == CAMPAIGNS_MAX


@pytest.mark.parametrize("field", ["category_multipliers", "campaigns"])
def test_rules_refuse_a_malformed_collection_with_a_value_error(field: str) -> None:
    # from_json promises InvalidRate or ValueError with a clear message; stored rules are
    # parsed on every purchase, so anything else escapes as an unexplained crash.
    malformed = {"category_multipliers": ["books"], "campaigns": {"spring": "2"}}
    with pytest.raises(ValueError):
        EarningRules.from_json(rules_json(**{field: malformed[field]}))


# --- points_for_purchase ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount_minor", "points"),
    [(0, 0), (1, 0), (9_999, 0), (10_000, 1), (10_001, 1), (19_999, 1), (29_999, 2), (30_000, 3)],
)
def test_one_point_per_100_rub_rounds_down(amount_minor: int, points: int) -> None:
    assert points_for_purchase(rules(), amount_minor, time_us=NOON_US) == points


def test_points_per_step_scales_before_rounding() -> None:
    # 3 points per 100 RUB: 50 RUB earns 1.5 → 1, not 0 × 3.
    assert points_for_purchase(rules(points_per_step=3), 5_000, time_us=NOON_US) == 1
    assert points_for_purchase(rules(points_per_step=0), 10**9, time_us=NOON_US) == 0


def test_category_multiplier_applies_to_its_category_only() -> None:
    r = rules(category_multipliers={"books": "2", "fuel": "0.5"})
    assert points_for_purchase(r, 100_000, time_us=NOON_US, category="books") == 20
    assert points_for_purchase(r, 100_000, time_us=NOON_US, category="fuel") == 5
    assert points_for_purchase(r, 100_000, time_us=NOON_US, category="toys") == 10
    assert points_for_purchase(r, 100_000, time_us=NOON_US) == 10


def test_campaign_applies_inside_its_half_open_window() -> None:
    r = rules(campaigns=[campaign_json("3")])
    starts_us, ends_us = parse_time_us(SPRING_STARTS), parse_time_us(SPRING_ENDS)
    earned = {
        format_time_us(t): points_for_purchase(r, 100_000, time_us=t)
        for t in (starts_us - 1, starts_us, NOON_US, ends_us - 1, ends_us)
    }
    assert earned == {
        "2026-02-28T23:59:59.999999Z": 10,
        SPRING_STARTS: 30,
        "2026-03-10T12:00:00.000000Z": 30,
        "2026-03-31T23:59:59.999999Z": 30,
        SPRING_ENDS: 10,
    }


def test_overlapping_campaigns_multiply() -> None:
    r = rules(
        campaigns=[
            campaign_json("2"),
            {
                "name": "weekend",
                "multiplier": "1.5",
                "starts": "2026-03-07T00:00:00.000000Z",
                "ends": "2026-03-09T00:00:00.000000Z",
            },
        ]
    )
    saturday_us = parse_time_us("2026-03-07T10:00:00.000000Z")
    assert points_for_purchase(r, 100_000, time_us=saturday_us) == 30
    assert points_for_purchase(r, 100_000, time_us=NOON_US) == 20


def test_tier_multiplier_applies() -> None:
    assert points_for_purchase(rules(), 100_000, time_us=NOON_US, tier_multiplier=Decimal(2)) == 20
    assert (
        points_for_purchase(rules(), 100_000, time_us=NOON_US, tier_multiplier=Decimal("1.25"))
        == 12
    )


def test_all_multipliers_compose() -> None:
    r = rules(category_multipliers={"books": "2"}, campaigns=[campaign_json("3")])
    points = points_for_purchase(
        r, 100_000, time_us=NOON_US, category="books", tier_multiplier=Decimal("1.5")
    )
    assert points == 10 * 2 * 3 * 3 // 2


def test_one_floor_over_the_exact_product() -> None:
    # 150 RUB at double points: 1.5 × 2 = 3. Flooring the base first would give 1 × 2 = 2.
    r = rules(category_multipliers={"books": "2"})
    assert points_for_purchase(r, 15_000, time_us=NOON_US, category="books") == 3
    # 100 RUB × 1.5 × 1.5 = 2.25 → 2. Flooring after the category step: 1 × 1.5 = 1.5 → 1.
    r = rules(category_multipliers={"books": "1.5"}, campaigns=[campaign_json("1.5")])
    assert points_for_purchase(r, 10_000, time_us=NOON_US, category="books") == 2


def test_a_multiplier_that_undoes_the_step_earns_the_whole_point() -> None:
    # 1 point per 300 RUB at triple points: a 100 RUB purchase earns exactly 1 point.
    r = rules(step_minor=30_000, category_multipliers={"books": "3"})
    assert exact_points(10_000, 1, 30_000, "3") == 1
    assert points_for_purchase(r, 10_000, time_us=NOON_US, category="books") == 1
    # The same through the tier multiplier.
    tripled = points_for_purchase(
        rules(step_minor=30_000), 10_000, time_us=NOON_US, tier_multiplier=Decimal(3)
    )
    assert tripled == 1


def test_rounding_never_pays_more_than_the_exact_product() -> None:
    # Found by search: the 28-digit decimal context rounds the product up across an
    # integer, so the member would get a point the rules do not give.
    amount_minor, multiplier = 151_352_102_429_911, "72.625733165618"
    expected = exact_points(amount_minor, 1, 10_000, multiplier)
    assert expected == 1_099_205_740_512 <= AMOUNT_MAX
    r = rules(category_multipliers={"books": multiplier})
    assert points_for_purchase(r, amount_minor, time_us=NOON_US, category="books") == expected


@given(
    amount_minor=st.integers(min_value=0, max_value=10**12),
    step_minor=st.integers(min_value=1, max_value=int(MULTIPLIER_MAX)),
)
@example(amount_minor=1, step_minor=3)
def test_a_multiplier_equal_to_the_step_gives_back_the_amount(
    amount_minor: int, step_minor: int
) -> None:
    # amount / step × step = amount exactly, so the single floor has nothing to drop.
    r = rules(step_minor=step_minor, category_multipliers={"all": str(step_minor)})
    assert points_for_purchase(r, amount_minor, time_us=NOON_US, category="all") == amount_minor


def test_cap_limits_points_per_transaction() -> None:
    capped = rules(cap_points=25)
    assert points_for_purchase(capped, 240_000, time_us=NOON_US) == 24
    assert points_for_purchase(capped, 250_000, time_us=NOON_US) == 25
    assert points_for_purchase(capped, 10**12, time_us=NOON_US) == 25
    assert points_for_purchase(rules(cap_points=0), 10**12, time_us=NOON_US) == 0
    assert points_for_purchase(rules(), 10**12, time_us=NOON_US) == 10**8


def test_cap_applies_after_every_multiplier() -> None:
    r = rules(cap_points=25, category_multipliers={"books": "10"})
    assert points_for_purchase(r, 20_000, time_us=NOON_US, category="books") == 20
    assert points_for_purchase(r, 30_000, time_us=NOON_US, category="books") == 25


# --- properties ---------------------------------------------------------------------------

rates = st.integers(min_value=0, max_value=1_000_000).map(lambda n: str(Decimal(n).scaleb(-4)))
instants = st.integers(
    min_value=parse_time_us("2026-02-01T00:00:00.000000Z"),
    max_value=parse_time_us("2026-05-01T00:00:00.000000Z"),
)


@st.composite
def earning_rules(draw: st.DrawFn) -> EarningRules:
    return EarningRules.from_json(
        rules_json(
            points_per_step=draw(st.integers(min_value=0, max_value=1_000)),
            step_minor=draw(st.integers(min_value=1, max_value=1_000_000)),
            category_multipliers=draw(st.dictionaries(st.sampled_from("abc"), rates)),
            campaigns=[campaign_json(m) for m in draw(st.lists(rates, max_size=3))],
            cap_points=draw(st.none() | st.integers(min_value=0, max_value=10_000)),
        )
    )


@given(
    drawn=earning_rules(),
    amount_minor=st.integers(min_value=0, max_value=AMOUNT_MAX),
    more_minor=st.integers(min_value=0, max_value=AMOUNT_MAX),
    time_us=instants,
    category=st.none() | st.sampled_from("abcd"),
    tier_multiplier=rates.map(Decimal),
)
def test_points_are_monotone_in_the_amount_and_within_the_cap(
    drawn: EarningRules,
    amount_minor: int,
    more_minor: int,
    time_us: int,
    category: str | None,
    tier_multiplier: Decimal,
) -> None:
    def earn(amount: int) -> int:
        return points_for_purchase(
            drawn, amount, time_us=time_us, category=category, tier_multiplier=tier_multiplier
        )

    smaller, larger = earn(amount_minor), earn(amount_minor + more_minor)
    assert 0 <= smaller <= larger
    if drawn.cap_points is not None:
        assert larger <= drawn.cap_points

"""Tier policies, partner terms and calendar-month arithmetic: pure, no database."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from coalition.policy import add_months_us
from coalition.tiers import DAY_US, Tier, TierPolicy
from ledger.timefmt import format_time_us, parse_time_us
from settlement.money import InvalidRate
from settlement.terms import BPS_MAX, CYCLES, MODES, PartnerTerms

# --- tiers ------------------------------------------------------------------------------


def tiers_json(**overrides: Any) -> dict[str, Any]:
    """Silver from 10,000 RUB, gold from 50,000 RUB of rolling spend (in kopecks)."""
    data: dict[str, Any] = {
        "currency": "RUB",
        "window_days": 365,
        "tiers": [
            {"name": "silver", "threshold_minor": 1_000_000, "multiplier": "1.25"},
            {"name": "gold", "threshold_minor": 5_000_000, "multiplier": "1.5"},
        ],
    }
    data.update(overrides)
    return data


def test_tier_policy_parses_and_round_trips() -> None:
    policy = TierPolicy.from_json(tiers_json())
    assert policy == TierPolicy(
        "RUB",
        365,
        (Tier("silver", 1_000_000, Decimal("1.25")), Tier("gold", 5_000_000, Decimal("1.5"))),
    )
    assert policy.to_json() == tiers_json()
    assert TierPolicy.from_json(policy.to_json()) == policy


def test_window_is_whole_days_in_microseconds() -> None:
    assert TierPolicy.from_json(tiers_json(window_days=30)).window_us == 30 * 86_400_000_000
    assert DAY_US == 86_400_000_000


@pytest.mark.parametrize(
    ("spend_minor", "tier"),
    [
        (0, None),
        (999_999, None),
        (1_000_000, "silver"),
        (1_000_001, "silver"),
        (4_999_999, "silver"),
        (5_000_000, "gold"),
        (10**15, "gold"),
    ],
)
def test_tier_for_takes_the_highest_threshold_reached(spend_minor: int, tier: str | None) -> None:
    found = TierPolicy.from_json(tiers_json()).tier_for(spend_minor)
    assert (None if found is None else found.name) == tier


def test_a_zero_threshold_tier_covers_every_member() -> None:
    policy = TierPolicy.from_json(
        tiers_json(tiers=[{"name": "base", "threshold_minor": 0, "multiplier": "1"}])
    )
    base = policy.tier_for(0)
    assert base is not None
    assert (base.name, base.multiplier) == ("base", Decimal(1))


def test_no_tiers_means_no_tier() -> None:
    assert TierPolicy.from_json(tiers_json(tiers=[])).tier_for(10**12) is None


@pytest.mark.parametrize("window_days", [1, 3660])
def test_window_limits_are_accepted(window_days: int) -> None:
    assert TierPolicy.from_json(tiers_json(window_days=window_days)).window_days == window_days


@pytest.mark.parametrize("window_days", [0, -1, 3661, 30.0, "30", True, None])
def test_window_must_be_an_integer_from_1_to_3660(window_days: object) -> None:
    with pytest.raises(ValueError, match="window_days"):
        TierPolicy.from_json(tiers_json(window_days=window_days))


@pytest.mark.parametrize(
    "thresholds",
    [
        [5_000_000, 1_000_000],  # descending
        [1_000_000, 1_000_000],  # not distinct
        [-1, 1_000_000],  # negative
    ],
)
def test_thresholds_must_be_distinct_non_negative_ascending(thresholds: list[int]) -> None:
    tiers = [
        {"name": f"t{i}", "threshold_minor": t, "multiplier": "1"} for i, t in enumerate(thresholds)
    ]
    with pytest.raises(ValueError, match="non-negative"):  # both checks say so
        TierPolicy.from_json(tiers_json(tiers=tiers))


@pytest.mark.parametrize(
    ("multiplier", "message"),
    [(1.5, "decimal string"), ("-1", "not negative"), ("x", "not a decimal")],
)
def test_tier_multiplier_must_be_a_decimal_string(multiplier: object, message: str) -> None:
    tiers = [{"name": "silver", "threshold_minor": 0, "multiplier": multiplier}]
    with pytest.raises(InvalidRate, match=message):
        TierPolicy.from_json(tiers_json(tiers=tiers))


@pytest.mark.parametrize("threshold", [1_000_000.9, "1000000", True])
def test_threshold_must_be_an_integer(threshold: object) -> None:
    # Earning rules refuse non-int amounts (type(x) is not int); a threshold of 1,000,000.9
    # silently becoming 1,000,000 would move members across a tier boundary.
    tiers = [{"name": "silver", "threshold_minor": threshold, "multiplier": "1.25"}]
    with pytest.raises(ValueError):
        TierPolicy.from_json(tiers_json(tiers=tiers))


# --- partner terms -------------------------------------------------------------------------


def terms_json(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "issuance_price_per_point": "0.45",
        "redemption_rate_per_point": "0.4",
        "operator_fee_bps": 250,
        "breakage_share": "0.5",
        "cycle": "monthly",
        "mode": "multilateral",
    }
    data.update(overrides)
    return data


def test_terms_parse_and_round_trip() -> None:
    terms = PartnerTerms.from_json(terms_json())
    assert terms == PartnerTerms(
        issuance_price_per_point=Decimal("0.45"),
        redemption_rate_per_point=Decimal("0.4"),
        operator_fee_bps=250,
        breakage_share=Decimal("0.5"),
        cycle="monthly",
        mode="multilateral",
    )
    assert terms.to_json() == terms_json()
    assert PartnerTerms.from_json(terms.to_json()) == terms


@pytest.mark.parametrize("cycle", CYCLES)
@pytest.mark.parametrize("mode", MODES)
def test_every_cycle_and_mode_is_accepted(cycle: str, mode: str) -> None:
    terms = PartnerTerms.from_json(terms_json(cycle=cycle, mode=mode))
    assert (terms.cycle, terms.mode) == (cycle, mode)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cycle": "yearly"}, "cycle"),
        ({"cycle": "Monthly"}, "cycle"),
        ({"cycle": None}, "cycle"),
        ({"mode": "trilateral"}, "mode"),
        ({"mode": None}, "mode"),
        ({"operator_fee_bps": -1}, "operator_fee_bps"),
        ({"operator_fee_bps": BPS_MAX + 1}, "operator_fee_bps"),
        ({"operator_fee_bps": 250.0}, "operator_fee_bps"),
        ({"operator_fee_bps": "250"}, "operator_fee_bps"),
        ({"operator_fee_bps": True}, "operator_fee_bps"),
        ({"operator_fee_bps": None}, "operator_fee_bps"),
    ],
)
def test_terms_validation_errors(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PartnerTerms.from_json(terms_json(**overrides))


@pytest.mark.parametrize("fee_bps", [0, BPS_MAX])
def test_fee_limits_are_accepted(fee_bps: int) -> None:
    assert PartnerTerms.from_json(terms_json(operator_fee_bps=fee_bps)).operator_fee_bps == fee_bps


@pytest.mark.parametrize("share", ["0", "1", "0.999999999999"])
def test_breakage_share_from_0_to_1_is_accepted(share: str) -> None:
    assert PartnerTerms.from_json(terms_json(breakage_share=share)).breakage_share == Decimal(share)


@pytest.mark.parametrize("share", ["1.000000000001", "2", "-0.1"])
def test_breakage_share_above_1_or_negative_is_refused(share: str) -> None:
    with pytest.raises(InvalidRate, match="breakage_share"):
        PartnerTerms.from_json(terms_json(breakage_share=share))


@pytest.mark.parametrize(
    "field", ["issuance_price_per_point", "redemption_rate_per_point", "breakage_share"]
)
@pytest.mark.parametrize("value", [0.45, 1, None, "0.45.1", "NaN", "-0.01", "1e-13"])
def test_rates_must_be_decimal_strings(field: str, value: object) -> None:
    with pytest.raises(InvalidRate, match=field):
        PartnerTerms.from_json(terms_json(**{field: value}))


def test_zero_issuance_price_is_allowed() -> None:
    terms = PartnerTerms.from_json(terms_json(issuance_price_per_point="0"))
    assert terms.issuance_price_per_point == 0


# --- add_months_us ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "months", "end"),
    [
        ("2025-01-31T00:00:00.000000Z", 1, "2025-02-28T00:00:00.000000Z"),
        ("2024-01-31T00:00:00.000000Z", 1, "2024-02-29T00:00:00.000000Z"),  # leap year
        ("2025-01-31T00:00:00.000000Z", 2, "2025-03-31T00:00:00.000000Z"),  # no carried clamp
        ("2025-08-31T00:00:00.000000Z", 1, "2025-09-30T00:00:00.000000Z"),
        ("2025-11-30T00:00:00.000000Z", 3, "2026-02-28T00:00:00.000000Z"),
        ("2025-12-15T00:00:00.000000Z", 1, "2026-01-15T00:00:00.000000Z"),  # year rolls over
        ("2024-02-29T00:00:00.000000Z", 12, "2025-02-28T00:00:00.000000Z"),
        ("2024-02-29T00:00:00.000000Z", 48, "2028-02-29T00:00:00.000000Z"),
        ("2025-01-31T00:00:00.000000Z", 24, "2027-01-31T00:00:00.000000Z"),
        ("2023-03-31T00:00:00.000000Z", 11, "2024-02-29T00:00:00.000000Z"),
        ("2099-12-31T00:00:00.000000Z", 2, "2100-02-28T00:00:00.000000Z"),  # 2100 not leap
        ("2026-05-10T00:00:00.000000Z", 120, "2036-05-10T00:00:00.000000Z"),
        ("2026-05-10T00:00:00.000000Z", 0, "2026-05-10T00:00:00.000000Z"),
    ],
)
def test_add_months_clamps_to_the_month_end(start: str, months: int, end: str) -> None:
    assert format_time_us(add_months_us(parse_time_us(start), months)) == end


@pytest.mark.parametrize(
    ("start", "months", "end"),
    [
        ("2025-01-31T23:59:59.999999Z", 1, "2025-02-28T23:59:59.999999Z"),
        ("2024-01-31T08:15:00.000001Z", 1, "2024-02-29T08:15:00.000001Z"),
        ("2025-03-15T12:34:56.789012Z", 24, "2027-03-15T12:34:56.789012Z"),
        ("1970-01-01T00:00:00.000000Z", 1, "1970-02-01T00:00:00.000000Z"),
    ],
)
def test_add_months_keeps_the_time_of_day(start: str, months: int, end: str) -> None:
    assert format_time_us(add_months_us(parse_time_us(start), months)) == end

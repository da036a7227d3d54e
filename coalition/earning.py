"""How many points a purchase earns: a pure function of the rules, the purchase and the tier.

points = floor(amount_minor × points_per_step / step_minor × category multiplier
               × campaign multiplier × tier multiplier), then capped per transaction.
One floor, at the end, over the exact product: multipliers never round on their own.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

from ledger.timefmt import format_time_us, parse_time_us
from settlement.money import InvalidRate, parse_rate

MULTIPLIER_MAX = Decimal(100)
_CURRENCY = re.compile(r"[A-Z]{3}")
CATEGORIES_MAX = 100
CAMPAIGNS_MAX = 50


@dataclass(frozen=True, slots=True)
class Campaign:
    name: str
    multiplier: Decimal
    starts_us: int
    ends_us: int  # exclusive

    def applies_at(self, time_us: int) -> bool:
        return self.starts_us <= time_us < self.ends_us


@dataclass(frozen=True, slots=True)
class EarningRules:
    """One partner's earning rules, as recorded in the journal (a new version replaces)."""

    currency: str
    points_per_step: int  # e.g. 1 point …
    step_minor: int  # … per 10,000 kopecks (100 RUB)
    category_multipliers: dict[str, Decimal] = field(default_factory=dict)
    campaigns: tuple[Campaign, ...] = ()
    cap_points: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "points_per_step": self.points_per_step,
            "step_minor": self.step_minor,
            "category_multipliers": {k: str(v) for k, v in self.category_multipliers.items()},
            "campaigns": [
                {
                    "name": c.name,
                    "multiplier": str(c.multiplier),
                    "starts": format_time_us(c.starts_us),
                    "ends": format_time_us(c.ends_us),
                }
                for c in self.campaigns
            ],
            "cap_points": self.cap_points,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EarningRules:
        """Parse and validate; raises InvalidRate or ValueError with a clear message."""
        currency = data.get("currency")
        if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
            raise ValueError("currency must be an ISO 4217 code such as RUB")
        points = data.get("points_per_step")
        step = data.get("step_minor")
        if type(points) is not int or type(step) is not int or points < 0 or step <= 0:
            raise ValueError("points_per_step must be ≥ 0 and step_minor > 0 (integers)")
        categories = data.get("category_multipliers") or {}
        campaigns = data.get("campaigns") or []
        if not isinstance(categories, dict) or not isinstance(campaigns, list):
            raise ValueError("category_multipliers is an object, campaigns a list")
        if len(categories) > CATEGORIES_MAX or len(campaigns) > CAMPAIGNS_MAX:
            raise ValueError(f"at most {CATEGORIES_MAX} categories and {CAMPAIGNS_MAX} campaigns")
        cap = data.get("cap_points")
        if cap is not None and (type(cap) is not int or cap < 0):
            raise ValueError("cap_points must be a non-negative integer or null")
        return cls(
            currency=currency,
            points_per_step=points,
            step_minor=step,
            category_multipliers={
                str(k): parse_rate(v, f"multiplier of {k}", maximum=MULTIPLIER_MAX)
                for k, v in categories.items()
            },
            campaigns=tuple(_campaign(c) for c in campaigns),
            cap_points=cap,
        )


def _campaign(data: Any) -> Campaign:
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ValueError("a campaign needs a name, a multiplier, starts and ends")
    starts, ends = parse_time_us(str(data.get("starts"))), parse_time_us(str(data.get("ends")))
    if ends <= starts:
        raise ValueError(f"campaign {data['name']} ends before it starts")
    multiplier = parse_rate(data.get("multiplier"), "campaign multiplier", maximum=MULTIPLIER_MAX)
    return Campaign(data["name"], multiplier, starts, ends)


def points_for_purchase(
    rules: EarningRules,
    amount_minor: int,
    *,
    time_us: int,
    category: str | None = None,
    tier_multiplier: Decimal = Decimal(1),
) -> int:
    """Points earned; 0 for a purchase too small to reach one point."""
    assert amount_minor >= 0, "callers validate amounts"
    # Fractions, not Decimals: a Decimal division rounds to 28 digits, and 1/3 × 3 would
    # floor to 0. The one rounding is the floor at the end.
    exact = Fraction(amount_minor * rules.points_per_step, rules.step_minor)
    if category is not None:
        exact *= Fraction(rules.category_multipliers.get(category, Decimal(1)))
    for campaign in rules.campaigns:
        if campaign.applies_at(time_us):
            exact *= Fraction(campaign.multiplier)
    exact *= Fraction(tier_multiplier)
    points = math.floor(exact)  # toward zero: amounts are never negative
    if rules.cap_points is not None:
        points = min(points, rules.cap_points)
    return points


__all__ = ["Campaign", "EarningRules", "InvalidRate", "points_for_purchase"]

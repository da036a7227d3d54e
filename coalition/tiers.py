"""Tiers: thresholds on a member's rolling spend across the whole coalition.

The spend is summed from the journal's earn entries (their recorded purchase amounts) in
the window before the purchase, so a member's tier at any moment is derivable from the
journal alone. The highest tier whose threshold the spend reaches applies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from settlement.money import parse_rate

DAY_US = 86_400_000_000
TIERS_MAX = 20
MULTIPLIER_MAX = Decimal(100)
_CURRENCY = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    threshold_minor: int  # rolling spend at or above this …
    multiplier: Decimal  # … multiplies earned points by this


@dataclass(frozen=True, slots=True)
class TierPolicy:
    currency: str
    window_days: int
    tiers: tuple[Tier, ...]  # ascending thresholds; the first is usually 0

    def tier_for(self, rolling_spend_minor: int) -> Tier | None:
        reached = [t for t in self.tiers if rolling_spend_minor >= t.threshold_minor]
        return reached[-1] if reached else None

    @property
    def window_us(self) -> int:
        return self.window_days * DAY_US

    def to_json(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "window_days": self.window_days,
            "tiers": [
                {
                    "name": t.name,
                    "threshold_minor": t.threshold_minor,
                    "multiplier": str(t.multiplier),
                }
                for t in self.tiers
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TierPolicy:
        window = data.get("window_days")
        if type(window) is not int or not 1 <= window <= 3660:
            raise ValueError("window_days must be an integer from 1 to 3660")
        currency = data.get("currency")
        if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
            raise ValueError("a tier policy counts spend in one ISO 4217 currency")
        raw = data.get("tiers")
        if not isinstance(raw, list) or len(raw) > TIERS_MAX:
            raise ValueError(f"tiers: a list of at most {TIERS_MAX}")
        tiers = tuple(_tier(t) for t in raw)
        thresholds = [t.threshold_minor for t in tiers]
        if thresholds != sorted(set(thresholds)) or any(x < 0 for x in thresholds):
            raise ValueError("tier thresholds must be distinct, non-negative and ascending")
        return cls(currency, window, tiers)


def _tier(data: Any) -> Tier:
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        raise ValueError("a tier needs a name, a threshold_minor and a multiplier")
    threshold = data.get("threshold_minor")
    if type(threshold) is not int or threshold < 0:
        raise ValueError("threshold_minor must be a non-negative integer")
    multiplier = parse_rate(data.get("multiplier"), "tier multiplier", maximum=MULTIPLIER_MAX)
    return Tier(data["name"], threshold, multiplier)

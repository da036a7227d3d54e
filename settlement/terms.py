"""A partner's commercial terms: effective-dated versions, never edited in place.

Each version is a journal entry (no postings), so settlement can prove which terms
applied to any redemption: the version in force is the latest whose ``effective_from``
is not after the redemption's time.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from settlement.money import parse_rate

CYCLES = ("daily", "weekly", "monthly")
MODES = ("multilateral", "bilateral")
BPS_MAX = 10_000


@dataclass(frozen=True, slots=True)
class PartnerTerms:
    # Prices are in MINOR units of the partner's settlement currency per point (e.g. 95 =
    # 0.95 RUB a point), exact decimals, so a line's amount is points × price, in minor units.
    issuance_price_per_point: Decimal  # owed to the operator per point issued (may be 0)
    redemption_rate_per_point: Decimal  # paid to this partner per point redeemed at it
    operator_fee_bps: int  # operator's fee on redemptions, in basis points
    breakage_share: Decimal  # share of this partner's expired points value it keeps (0–1)
    cycle: str
    mode: str

    def to_json(self) -> dict[str, Any]:
        return {
            "issuance_price_per_point": str(self.issuance_price_per_point),
            "redemption_rate_per_point": str(self.redemption_rate_per_point),
            "operator_fee_bps": self.operator_fee_bps,
            "breakage_share": str(self.breakage_share),
            "cycle": self.cycle,
            "mode": self.mode,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartnerTerms:
        fee = data.get("operator_fee_bps")
        if type(fee) is not int or not 0 <= fee <= BPS_MAX:
            raise ValueError(f"operator_fee_bps must be an integer from 0 to {BPS_MAX}")
        if data.get("cycle") not in CYCLES:
            raise ValueError(f"cycle must be one of {', '.join(CYCLES)}")
        if data.get("mode") not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        return cls(
            issuance_price_per_point=parse_rate(
                data.get("issuance_price_per_point"), "issuance_price_per_point"
            ),
            redemption_rate_per_point=parse_rate(
                data.get("redemption_rate_per_point"), "redemption_rate_per_point"
            ),
            operator_fee_bps=fee,
            breakage_share=parse_rate(
                data.get("breakage_share"), "breakage_share", maximum=Decimal(1)
            ),
            cycle=str(data["cycle"]),
            mode=str(data["mode"]),
        )

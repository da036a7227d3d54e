"""Partner terms: defined by settlement, which applies them; the coalition records them."""

from settlement.terms import BPS_MAX, CYCLES, MODES, PartnerTerms

__all__ = ["BPS_MAX", "CYCLES", "MODES", "PartnerTerms"]

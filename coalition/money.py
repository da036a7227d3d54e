"""Rates and roundings: the coalition uses settlement's, so that both round alike."""

from settlement.money import (
    InvalidRate,
    floor_to_int,
    half_even_to_int,
    parse_rate,
)

__all__ = ["InvalidRate", "floor_to_int", "half_even_to_int", "parse_rate"]

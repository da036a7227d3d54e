"""Exact decimals for rates and the one place where roundings are named (shared by the
coalition and settlement).

Rates (points per amount, reimbursement per point, multipliers, shares) are ``Decimal``
parsed from strings, never floats; every conversion to an integer says how it rounds.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal, InvalidOperation

RATE_DIGITS_MAX = 18  # significant digits a rate may carry
RATE_EXPONENT_MIN = -12  # at most twelve decimal places


class InvalidRate(ValueError):
    """A rate that is not a finite, non-negative decimal written as a string."""


def parse_rate(text: object, what: str, *, maximum: Decimal | None = None) -> Decimal:
    if not isinstance(text, str):
        raise InvalidRate(f'{what} must be a decimal string such as "0.01", not {text!r}')
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidRate(f"{what} {text!r} is not a decimal") from None
    if not value.is_finite() or value < 0:
        raise InvalidRate(f"{what} must be finite and not negative")
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    if len(digits) > RATE_DIGITS_MAX or exponent < RATE_EXPONENT_MIN:
        raise InvalidRate(f"{what} carries more precision than {RATE_DIGITS_MAX} digits allow")
    if maximum is not None and value > maximum:
        raise InvalidRate(f"{what} must not exceed {maximum}")
    return value


def floor_to_int(value: Decimal) -> int:
    """Round toward zero — how earned points round (a member never gets a part point)."""
    return int(value.to_integral_value(rounding=ROUND_DOWN))


def half_even_to_int(value: Decimal) -> int:
    """Banker's rounding — how money lines round in settlement."""
    return int(value.to_integral_value(rounding=ROUND_HALF_EVEN))


# ISO 4217 minor-unit exponents that are not 2 (the default).
_EXPONENTS = {
    "BHD": 3,
    "IQD": 3,
    "JOD": 3,
    "KWD": 3,
    "LYD": 3,
    "OMR": 3,
    "TND": 3,
    "BIF": 0,
    "CLP": 0,
    "DJF": 0,
    "GNF": 0,
    "ISK": 0,
    "JPY": 0,
    "KMF": 0,
    "KRW": 0,
    "PYG": 0,
    "RWF": 0,
    "UGX": 0,
    "UYI": 0,
    "VND": 0,
    "VUV": 0,
    "XAF": 0,
    "XOF": 0,
    "XPF": 0,
}


def minor_exponent(currency: str) -> int:
    return _EXPONENTS.get(currency, 2)


def format_minor(amount_minor: int, currency: str) -> str:
    """Minor units as an exact decimal string in major units (``12345`` EUR → ``123.45``)."""
    exponent = minor_exponent(currency)
    sign = "-" if amount_minor < 0 else ""
    whole, part = divmod(abs(amount_minor), 10**exponent)
    return f"{sign}{whole}" + (f".{part:0{exponent}d}" if exponent else "")


def decimal_text(value: Decimal) -> str:
    """A decimal as plain text without exponent or trailing zeros (``5E+1`` → ``50``)."""
    text = f"{value.normalize():f}"
    return text

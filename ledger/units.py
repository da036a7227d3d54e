"""Units of account and the bounds on amounts.

``PTS`` counts points; money uses ISO 4217 alphabetic codes. Every amount is an integer
in the unit's smallest step, bounded so that it survives JSON (RFC 8785 integers) exactly.
"""

from __future__ import annotations

import re

POINTS_UNIT = "PTS"
AMOUNT_MAX = 2**53 - 1

_ISO_4217 = re.compile(r"[A-Z]{3}")


def is_valid_unit(unit: str) -> bool:
    return unit == POINTS_UNIT or bool(_ISO_4217.fullmatch(unit))


def amount_in_range(amount: int) -> bool:
    return -AMOUNT_MAX <= amount <= AMOUNT_MAX

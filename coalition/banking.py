"""Bank details for settlement payments: IBANs checked (ISO 13616 mod-97), BICs shaped."""

from __future__ import annotations

import re

_IBAN = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}")
_BIC = re.compile(r"[A-Z]{6}[A-Z2-9][A-NP-Z0-9]([A-Z0-9]{3})?")


def iban_is_valid(iban: str) -> bool:
    if not _IBAN.fullmatch(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    digits = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(digits) % 97 == 1


def bic_is_valid(bic: str) -> bool:
    return bool(_BIC.fullmatch(bic))


def make_iban(country: str, bban: str) -> str:
    """An IBAN with correct check digits (for demo data and tests)."""
    digits = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    check = 98 - int(digits) % 97
    return f"{country}{check:02d}{bban}"

"""Bank details for settlement payments, checked in one place: a partner's account
(``set_bank_account``) and the coalition's clearing account (``clearing_account``).

IBANs and BICs are checked with schwifty (ISO 13616: the country's registered length and
format and the mod-97 check digits; ISO 9362: the BIC's shape and country). Both are
taken in their electronic form only — capitals, no spaces — the form a pain.001 file
carries (``DE89370400440532013000``, not ``de89 3704 …``).

The clearing account comes from ``COALITION_CLEARING_NAME``, ``COALITION_CLEARING_IBAN``
and ``COALITION_CLEARING_BIC``; there is no default, so that no payment file is ever
written against an account nobody configured. Only the demo (``coalition demo``) asks for
its demo account when none is configured.
"""

from __future__ import annotations

from collections.abc import Mapping

from schwifty import BIC, IBAN
from schwifty.exceptions import SchwiftyException

from settlement.pain001 import Clearing

ACCOUNT_NAME_MAX = 140  # pain.001 Max140Text
CLEARING_ENV = {
    "name": "COALITION_CLEARING_NAME",
    "iban": "COALITION_CLEARING_IBAN",
    "bic": "COALITION_CLEARING_BIC",
}
DEMO_CLEARING = Clearing("Coalition Clearing (demo)", "DE89370400440532013000", "COBADEFFXXX")


class InvalidBankAccount(ValueError):
    """An IBAN, BIC or account name that cannot be paid to or from (says which and why)."""


class ClearingAccountNotConfigured(ValueError):
    """No (or an invalid) clearing account in the environment: no payment file is written."""


def iban_problem(iban: object) -> str | None:
    """Why ``iban`` is not a valid IBAN in electronic form, or None."""
    if not isinstance(iban, str) or not iban:
        return "an IBAN is required"
    if not iban.isascii() or iban != iban.strip().upper() or " " in iban:
        return f"IBAN {iban!r}: write it in capitals without spaces"
    try:
        IBAN(iban)
    except SchwiftyException as exc:
        return f"IBAN {iban!r}: {_reason(exc)}"
    return None


def bic_problem(bic: object) -> str | None:
    """Why ``bic`` is not a valid BIC (8 or 11 characters, a known country), or None."""
    if not isinstance(bic, str) or not bic:
        return "a BIC is required"
    if not bic.isascii() or bic != bic.strip().upper() or " " in bic:
        return f"BIC {bic!r}: write it in capitals without spaces"
    try:
        BIC(bic)
    except SchwiftyException as exc:
        return f"BIC {bic!r}: {_reason(exc)}"
    return None


def name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not name.strip() or len(name) > ACCOUNT_NAME_MAX:
        return f"an account name of 1–{ACCOUNT_NAME_MAX} characters is required"
    return None


def bank_account_problem(iban: object, bic: object, name: object) -> str | None:
    """The first thing wrong with a bank account (IBAN, then BIC, then name), or None."""
    return iban_problem(iban) or bic_problem(bic) or name_problem(name)


def iban_is_valid(iban: str) -> bool:
    return iban_problem(iban) is None


def bic_is_valid(bic: str) -> bool:
    return bic_problem(bic) is None


def check_bank_account(iban: str, bic: str, name: str) -> None:
    """Raise InvalidBankAccount naming what is wrong."""
    problem = bank_account_problem(iban, bic, name)
    if problem is not None:
        raise InvalidBankAccount(problem)


def clearing_from_env(env: Mapping[str, str], *, demo: bool = False) -> Clearing:
    """The clearing account configured in ``env``, checked. With none configured, the
    demo account when ``demo`` (what ``coalition demo`` asks for), else
    ClearingAccountNotConfigured; a partly or wrongly configured one is refused always."""
    given = {field: env.get(variable, "").strip() for field, variable in CLEARING_ENV.items()}
    if not any(given.values()):
        if demo:
            return DEMO_CLEARING
        raise ClearingAccountNotConfigured(
            "no clearing account is configured: set "
            + ", ".join(CLEARING_ENV.values())
            + " (the account the coalition pays from)"
        )
    missing = [CLEARING_ENV[field] for field, value in given.items() if not value]
    if missing:
        raise ClearingAccountNotConfigured(
            f"the clearing account is configured only in part: set {', '.join(missing)}"
        )
    problem = bank_account_problem(given["iban"], given["bic"], given["name"])
    if problem is not None:
        raise ClearingAccountNotConfigured(f"the configured clearing account: {problem}")
    return Clearing(name=given["name"], iban=given["iban"], bic=given["bic"])


def make_iban(country: str, bban: str) -> str:
    """An IBAN with correct check digits (for demo data and tests)."""
    digits = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    check = 98 - int(digits) % 97
    return f"{country}{check:02d}{bban}"


def _reason(exc: SchwiftyException) -> str:
    text = str(exc).strip().rstrip(".")
    return text[:1].lower() + text[1:] if text else type(exc).__name__

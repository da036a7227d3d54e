"""The one check of what a client sends, made at the edge, before any resolver runs (so
before anything is queued for the group committer or written).

Every argument of every field, and every field of an input object, is checked by its
GraphQL name against ``RULES`` (free text not named there gets ``DEFAULT_TEXT``):

- text: 1–128 characters (``TEXT_LENGTH_MAX``; a few fields have their own bound), not
  blank, no C0/C1 control characters, no lone surrogates, no invisible format characters
  (zero-width, bidirectional overrides, BOM) — what PostgreSQL or UTF-8 cannot store, or
  what no reference, id or label needs. Records (CSV or JSON) may hold tabs and line
  breaks;
- rates and prices: a plain ASCII decimal (``95``, ``0.5``), from 0 to ``RATE_MAX`` (or
  the rate's own maximum), at most ``RATE_PLACES_MAX`` decimal places: no exponent, sign,
  NaN, Infinity, spaces, underscores or non-ASCII digits;
- times: what coalition.time_input reads — RFC 3339 with an offset, fractional seconds
  optional (``2026-12-01T00:00:00Z``, ``2026-12-01T03:00:00+03:00``), or a plain date
  (``2026-12-01``: midnight in the coalition's time zone); 1970 to 9999, ASCII digits;
- amounts (minor units, points): at most ``AMOUNT_MAX`` either way.

A failed check names the field (``reference: must be …``, ``member.memberId: …``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from coalition.time_input import INSTANT_HELP, InvalidTime, parse_instant
from ledger.units import AMOUNT_MAX

TEXT_LENGTH_MAX = 128
RECORDS_LENGTH_MAX = 1_000_000  # the request body is at most 1 MiB anyway
RATE_MAX = Decimal(1_000_000)  # minor units per point: 10,000 of a currency a point
RATE_INTEGER_DIGITS_MAX = len(str(RATE_MAX))
RATE_PLACES_MAX = 12  # as settlement.money allows
TOLERANCE_SECONDS_MAX = 86_400

# C0 and C1 controls (and DEL), lone surrogates, and invisible format characters:
# zero-width space to right-to-left mark, line and paragraph separators, bidirectional
# embeddings, overrides and isolates, word joiner and invisible operators, BOM,
# interlinear annotation marks.
_INVISIBLE = "\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb\ud800-\udfff"
_CONTROL = re.compile(f"[\x00-\x1f\x7f-\x9f{_INVISIBLE}]")
_CONTROL_BUT_LINES = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_INVISIBLE}]")
_RATE = re.compile(
    f"[0-9]{{1,{RATE_INTEGER_DIGITS_MAX}}}(?:\\.[0-9]{{1,{RATE_PLACES_MAX}}})?", re.ASCII
)


@dataclass(frozen=True, slots=True)
class Text:
    length_max: int = TEXT_LENGTH_MAX
    multiline: bool = False

    def problem(self, value: object) -> str | None:
        if not isinstance(value, str):
            return None
        control = _CONTROL_BUT_LINES if self.multiline else _CONTROL
        if len(value) <= self.length_max and value.strip() and not control.search(value):
            return None
        if self.multiline:
            return (
                f"must be 1–{self.length_max} characters without control characters"
                " other than tabs and line breaks"
            )
        return (
            f"must be 1–{self.length_max} printable characters without control characters,"
            " not blank"
        )


@dataclass(frozen=True, slots=True)
class Rate:
    maximum: Decimal = RATE_MAX

    def problem(self, value: object) -> str | None:
        if not isinstance(value, str):
            return None
        if _RATE.fullmatch(value) and Decimal(value) <= self.maximum:
            return None
        return (
            f'must be a decimal such as "0.95", from 0 to {self.maximum},'
            f" with at most {RATE_PLACES_MAX} decimal places"
        )


@dataclass(frozen=True, slots=True)
class Time:
    def problem(self, value: object) -> str | None:
        if not isinstance(value, str):
            return None
        try:
            parse_instant(value)
        except InvalidTime:
            return f"must be a time from 1970 to 9999: {INSTANT_HELP}"
        return None


@dataclass(frozen=True, slots=True)
class Integer:
    minimum: int
    maximum: int

    def problem(self, value: object) -> str | None:
        if not isinstance(value, int) or self.minimum <= value <= self.maximum:
            return None
        return f"must be from {self.minimum} to {self.maximum}"


Rule = Text | Rate | Time | Integer

DEFAULT_TEXT = Text()
_AMOUNT = Integer(-AMOUNT_MAX, AMOUNT_MAX)  # the sign is the use case's to judge
_TIME = Time()

# By GraphQL name, wherever the name appears (arguments and input object fields).
RULES: Mapping[str, Rule] = {
    "memberId": Text(64),
    "cardNumber": Text(64),
    "partnerId": Text(64),
    "party": Text(64),
    "category": Text(64),
    "legalName": Text(200),
    "records": Text(RECORDS_LENGTH_MAX, multiline=True),
    "url": Text(2000),  # a webhook endpoint (coalition.webhooks checks the rest)
    "issuancePricePerPoint": Rate(),
    "redemptionRatePerPoint": Rate(),
    "breakageShare": Rate(Decimal(1)),
    "effectiveFrom": _TIME,
    "fromTime": _TIME,
    "toTime": _TIME,
    "purchaseMinor": _AMOUNT,
    "refundMinor": _AMOUNT,
    "points": _AMOUNT,
    "stepMinor": _AMOUNT,
    "capPoints": _AMOUNT,
    "toleranceSeconds": Integer(0, TOLERANCE_SECONDS_MAX),
    "iban": Text(34),  # checked in full by coalition.banking
    "bic": Text(11),
    "baseCurrency": Text(3),
    "quoteCurrency": Text(3),
    "rate": Rate(),
    "source": Text(128),
    "rateDate": Text(10),  # YYYY-MM-DD, checked by the use case
}


def problem(arguments: Mapping[str, Any], prefix: str = "") -> str | None:
    """The first argument that fails its rule, as ``"name: what it must be"``, or None."""
    for name, value in arguments.items():
        found = _one(f"{prefix}{name}", name, value)
        if found is not None:
            return found
    return None


def _one(path: str, name: str, value: object) -> str | None:
    if isinstance(value, Mapping):
        return problem(value, f"{path}.")
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _one(f"{path}[{i}]", name, item)
            if found is not None:
                return found
        return None
    wrong = RULES.get(name, DEFAULT_TEXT).problem(value)
    return None if wrong is None else f"{path}: {wrong}"

"""What a coalition use case answers: a success value, or one typed refusal.

Refusals are values with one code per business rule (the API maps them to GraphQL union
members); nothing is written when a use case refuses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class RefusalCode(enum.StrEnum):
    INVALID_REQUEST = "invalid_request"
    DUPLICATE_REFERENCE = "duplicate_reference"  # same reference, different payload
    UNKNOWN_PARTNER = "unknown_partner"
    PARTNER_EXISTS = "partner_exists"
    PARTNER_SUSPENDED = "partner_suspended"
    NO_TERMS = "no_terms"
    NO_EARNING_RULES = "no_earning_rules"
    CURRENCY_NOT_ACCEPTED = "currency_not_accepted"
    UNKNOWN_MEMBER = "unknown_member"
    MEMBER_EXISTS = "member_exists"
    MEMBER_BLOCKED = "member_blocked"
    MEMBER_ERASED = "member_erased"  # personal data erased: the member can't be named or changed
    CARD_TAKEN = "card_taken"
    INSUFFICIENT_POINTS = "insufficient_points"
    POINTS_EXPIRED = "points_expired"
    UNKNOWN_HOLD = "unknown_hold"
    HOLD_NOT_ACTIVE = "hold_not_active"
    HOLD_EXPIRED = "hold_expired"
    OVER_CAPTURE = "over_capture"
    UNKNOWN_TRANSACTION = "unknown_transaction"
    REFUND_EXCEEDS_ORIGINAL = "refund_exceeds_original"
    BUSY = "busy"  # lost a race for the same lots too often; safe to retry
    PERIOD_SETTLED = "period_settled"
    UNKNOWN_RUN = "unknown_run"
    RUN_NOT_COMPUTED = "run_not_computed"
    RUN_NOT_APPROVED = "run_not_approved"
    SAME_APPROVER = "same_approver"
    UNKNOWN_PAYMENT = "unknown_payment"
    PAYMENT_ALREADY_CONFIRMED = "payment_already_confirmed"  # by someone else: says who
    SETTLEMENT_INPUT_MISSING = "settlement_input_missing"
    PARTY_NOT_PAYABLE = "party_not_payable"  # no bank account, or a rate missing
    UNKNOWN_SUBSCRIPTION = "unknown_subscription"  # none, or another partner's
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    URL_NOT_ALLOWED = "url_not_allowed"  # a webhook to a non-public address, or not https
    CONTROL_TOTALS_MISMATCH = "control_totals_mismatch"  # a batch file's trailer is wrong


@dataclass(frozen=True, slots=True)
class Refusal:
    code: RefusalCode
    detail: str

    def __str__(self) -> str:
        return f"{self.code.value}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Recorded:
    """A fact (partner, terms, member, …) written to the journal at ``seq``."""

    seq: int
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Earned:
    seq: int
    points: int
    tier: str | None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Redeemed:
    seq: int
    points: int
    points_by_issuer: dict[str, int] = field(default_factory=dict)
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Authorised:
    hold_seq: int
    points: int
    expires_us: int
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Voided:
    seq: int
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Refunded:
    seq: int
    points: int  # taken back from (or returned to) the member
    debt_points: int = 0  # the part the member had already spent: now owed
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Expired:
    entries: int
    points: int
    points_by_issuer: dict[str, int] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)  # accounts the ledger refused, and why

"""Why an entry was refused: one code per rule, as a value, never an exception.

A rejected entry writes nothing; the other entries of its batch go on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RejectionCode(enum.StrEnum):
    INVALID_ENTRY = "invalid_entry"
    POSTINGS_MUST_BALANCE = "postings_must_balance"
    UNKNOWN_ACCOUNT = "unknown_account"
    ACCOUNT_EXISTS = "account_exists"
    UNIT_MISMATCH = "unit_mismatch"
    AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
    BALANCE_OUT_OF_RANGE = "balance_out_of_range"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    LOT_UNKNOWN = "lot_unknown"
    LOT_INSUFFICIENT = "lot_insufficient"
    LOT_EXPIRED = "lot_expired"
    LOT_NOT_EXPIRED = "lot_not_expired"
    LOT_RESTORE_EXCEEDS_CONSUMED = "lot_restore_exceeds_consumed"
    HOLD_UNKNOWN = "hold_unknown"
    HOLD_NOT_ACTIVE = "hold_not_active"
    HOLD_EXPIRED = "hold_expired"
    CAPTURE_EXCEEDS_HOLD = "capture_exceeds_hold"
    CAPTURE_MISMATCH = "capture_mismatch"
    CORRECTS_UNKNOWN_ENTRY = "corrects_unknown_entry"
    CORRECTION_EXCEEDS_ORIGINAL = "correction_exceeds_original"
    PRECONDITION_FAILED = "precondition_failed"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    LIMIT_EXCEEDED = "limit_exceeded"


@dataclass(frozen=True, slots=True)
class Rejection:
    code: RejectionCode
    detail: str
    # With PRECONDITION_FAILED: the caller's own code for the rule its guard judged (the
    # ledger passes it through and gives it no meaning).
    reason: str | None = None

    def __str__(self) -> str:
        return f"{self.code.value}: {self.detail}"

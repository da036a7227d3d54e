"""What a caller asks the journal to append, before the ledger gives it a place.

A request names a kind (free text: the ledger attaches no meaning to it), a reference for
idempotency, metadata, and any of: accounts to open, postings, a hold to place, a hold to
capture or void, and the entry it corrects. The ledger turns it into an entry by adding
``seq``, ``prev``, ``time`` and, for debits of lot-tracked accounts, the lots it consumes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

_REQUEST_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr
)


@dataclass(frozen=True, slots=True)
class AccountSpec:
    account: str
    unit: str
    overdraft: bool = False
    lot_tracked: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "unit": self.unit,
            "overdraft": self.overdraft,
            "lots": self.lot_tracked,
        }


@dataclass(frozen=True, slots=True)
class LotTake:
    """An amount taken from (debit) or given back to (credit) one named lot."""

    lot_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class PostingRequest:
    """``amount`` > 0 credits the account, < 0 debits it.

    For a lot-tracked account: a credit opens a lot from ``lot_origin`` expiring at
    ``lot_expires_us`` (None: never) unless ``lots`` names lots to restore; a debit takes
    the ``lots`` named, or first-expiring-first when none are named. ``take_expired``
    makes a debit take only lots that have already expired (moving them to breakage).
    ``allow_debt`` lets a debit of a lot-tracked overdraft account take more than its
    lots hold (a clawback); the account owes the rest and its next credits repay it.
    """

    account: str
    unit: str
    amount: int
    lot_origin: str | None = None
    lot_expires_us: int | None = None
    lots: tuple[LotTake, ...] | None = None
    take_expired: bool = False
    allow_debt: bool = False  # a lot-tracked overdraft account may owe what its lots lack

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"account": self.account, "unit": self.unit, "amount": self.amount}
        if self.lot_origin is not None:
            out["lot_origin"] = self.lot_origin
        if self.lot_expires_us is not None:
            out["lot_expires_us"] = self.lot_expires_us
        if self.lots is not None:
            out["lots"] = [{"lot": t.lot_id, "amount": t.amount} for t in self.lots]
        if self.take_expired:
            out["take_expired"] = True
        if self.allow_debt:
            out["allow_debt"] = True
        return out


@dataclass(frozen=True, slots=True)
class HoldRequest:
    account: str
    unit: str
    amount: int
    expires_us: int


@dataclass(frozen=True, slots=True)
class EntryRequest:
    kind: str
    ref_scope: str
    ref_key: str
    postings: tuple[PostingRequest, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    open_accounts: tuple[AccountSpec, ...] = ()
    hold: HoldRequest | None = None
    capture_hold_seq: int | None = None
    capture_amount: int | None = None
    void_hold_seq: int | None = None
    corrects_seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "ref": {"scope": self.ref_scope, "key": self.ref_key},
            "meta": self.meta,
            "postings": [p.to_json() for p in self.postings],
        }
        if self.open_accounts:
            out["open"] = [a.to_json() for a in self.open_accounts]
        if self.hold is not None:
            h = self.hold
            out["hold"] = {
                "account": h.account,
                "unit": h.unit,
                "amount": h.amount,
                "expires_us": h.expires_us,
            }
        if self.capture_hold_seq is not None:
            out["capture"] = {"hold": self.capture_hold_seq, "amount": self.capture_amount}
        if self.void_hold_seq is not None:
            out["void"] = {"hold": self.void_hold_seq}
        if self.corrects_seq is not None:
            out["corrects"] = self.corrects_seq
        return out

    def request_hash(self) -> bytes:
        """Identifies the payload for idempotency: same reference, same hash, same result."""
        # Not canonical_bytes: a request that JCS cannot encode (a float, a huge amount)
        # must still be identifiable so that it can be rejected with a typed reason.
        text = _REQUEST_ENCODER.encode(self.to_json())
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()

"""Business outcomes as GraphQL union results: a success type, or one named refusal per
rule (``InsufficientPoints``, ``DuplicateReference`` …), each implementing ``Refusal``.

Refusals are not errors: the request was understood, checked and answered; nothing was
written. Clients match ``... on Refusal { code message }`` or a specific type."""

from __future__ import annotations

from typing import Annotated, Any, Union

import strawberry

from coalition import outcomes
from coalition.api.types import Long, PaymentFile, SettlementWarning

RefusalCode = strawberry.enum(outcomes.RefusalCode, name="RefusalCode")


@strawberry.interface(name="Refusal")
class RefusalInterface:
    code: RefusalCode  # type: ignore[valid-type]
    message: str


def _refusal_type(code: outcomes.RefusalCode) -> Any:
    name = "".join(part.title() for part in code.value.split("_"))
    cls = type(
        name, (RefusalInterface,), {"__annotations__": {}, "__doc__": f"Refused: {code.value}."}
    )
    return strawberry.type(cls)


REFUSALS: dict[outcomes.RefusalCode, Any] = {c: _refusal_type(c) for c in outcomes.RefusalCode}


@strawberry.type(description="Refused: party_not_payable (each problem named).")
class PartyNotPayable(RefusalInterface):
    problems: list[SettlementWarning] = strawberry.field(default_factory=list)


REFUSALS[outcomes.RefusalCode.PARTY_NOT_PAYABLE] = PartyNotPayable


def refusal(value: outcomes.Refusal) -> Any:
    return REFUSALS[value.code](code=value.code, message=value.detail)


@strawberry.type
class Earned:
    seq: Long
    points: Long
    tier: str | None
    replayed: bool


@strawberry.type
class IssuerPoints:
    issuer: str
    points: Long


@strawberry.type
class Redeemed:
    seq: Long
    points: Long
    by_issuer: list[IssuerPoints]
    replayed: bool


@strawberry.type
class Authorised:
    hold_seq: Long
    points: Long
    expires_at: str
    replayed: bool


@strawberry.type
class Voided:
    seq: Long
    replayed: bool


@strawberry.type
class Refunded:
    seq: Long
    points: Long
    debt_points: Long
    replayed: bool


@strawberry.type
class Recorded:
    seq: Long
    replayed: bool


def union(name: str, success: Any, *codes: outcomes.RefusalCode) -> Any:
    members = (success, *(REFUSALS[c] for c in codes))
    return Annotated[Union[members], strawberry.union(name)]  # noqa: UP007


C = outcomes.RefusalCode
_TILL = (
    C.INVALID_REQUEST,
    C.DUPLICATE_REFERENCE,
    C.UNKNOWN_PARTNER,
    C.PARTNER_SUSPENDED,
    C.UNKNOWN_MEMBER,
    C.MEMBER_BLOCKED,
    C.MEMBER_ERASED,
)
EarnResult = union(
    "EarnResult", Earned, *_TILL, C.NO_EARNING_RULES, C.CURRENCY_NOT_ACCEPTED, C.BUSY
)
RedeemResult = union(
    "RedeemResult", Redeemed, *_TILL, C.INSUFFICIENT_POINTS, C.POINTS_EXPIRED, C.BUSY
)
AuthoriseResult = union(
    "AuthoriseResult", Authorised, *_TILL, C.INSUFFICIENT_POINTS, C.POINTS_EXPIRED, C.BUSY
)
CaptureResult = union(
    "CaptureResult",
    Redeemed,
    *_TILL,
    C.UNKNOWN_HOLD,
    C.HOLD_NOT_ACTIVE,
    C.HOLD_EXPIRED,
    C.OVER_CAPTURE,
    C.INSUFFICIENT_POINTS,
    C.POINTS_EXPIRED,
    C.BUSY,
)
VoidResult = union(
    "VoidResult",
    Voided,
    C.INVALID_REQUEST,
    C.DUPLICATE_REFERENCE,
    C.UNKNOWN_HOLD,
    C.HOLD_NOT_ACTIVE,
)
RefundResult = union(
    "RefundResult",
    Refunded,
    C.INVALID_REQUEST,
    C.DUPLICATE_REFERENCE,
    C.UNKNOWN_TRANSACTION,
    C.REFUND_EXCEEDS_ORIGINAL,
    C.BUSY,
)
RecordResult = union("RecordResult", Recorded, *tuple(outcomes.RefusalCode))
PaymentFileResult = union(
    "PaymentFileResult",
    PaymentFile,
    C.INVALID_REQUEST,
    C.UNKNOWN_RUN,
    C.RUN_NOT_APPROVED,
    C.SETTLEMENT_INPUT_MISSING,
)

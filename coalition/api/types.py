"""GraphQL object types. Amounts are integers in minor units or points (GraphQL Int is
32-bit, so large amounts travel as the ``Long`` scalar: a decimal string of an integer)."""

from __future__ import annotations

import enum
import re
from typing import TYPE_CHECKING, NewType

import strawberry
from strawberry.types import Info

from coalition.api.context import ApiContext
from coalition.api.errors import BadInput
from ledger.timefmt import format_time_us

if TYPE_CHECKING:
    from coalition.payable import Problem

    Long = int  # to mypy, a plain int
else:
    Long = NewType("Long", int)  # to strawberry, the Long scalar (scalar_overrides)

# The schema maps the Long type to this scalar (see coalition.api.schema).
LONG_SCALAR = strawberry.scalar(
    name="Long",
    serialize=lambda value: str(int(value)),
    parse_value=lambda value: _parse_long(value),
    description="A 64-bit integer as a decimal string (minor units, points, sequence numbers).",
)


LONG_MAX = 2**63 - 1
_LONG_TEXT = re.compile(r"-?[0-9]{1,19}", re.ASCII)  # ASCII digits only: int() takes others


def _parse_long(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("a Long is an integer or a decimal string of one")
    if isinstance(value, str) and _LONG_TEXT.fullmatch(value) is None:
        raise ValueError("a Long is a decimal string of ASCII digits, with an optional '-'")
    number = int(value)
    if not -LONG_MAX <= number <= LONG_MAX:
        raise ValueError("a Long is an integer within ±(2^63−1)")
    return number


LOTS_FIRST_MAX = 100
_LOT_ID = re.compile(r"([0-9]{1,18}):([0-9]{1,4})")


@strawberry.enum
class Role(enum.Enum):
    PARTNER = "partner"
    AUDITOR = "auditor"
    FINANCE = "finance"
    OPERATOR = "operator"
    METRICS = "metrics"  # reads /metrics, nothing else


@strawberry.type
class Me:
    role: Role
    partner_id: str | None
    key_id: str


@strawberry.type
class Lot:
    lot_id: str
    origin: str
    expires_at: str | None
    amount_opened: Long
    remaining: Long


@strawberry.type
class HistoryLine:
    seq: Long
    time: str
    kind: str
    amount_points: Long
    balance_after_points: Long


@strawberry.type
class Member:
    member_id: str
    status: str
    balance_points: Long
    held_points: Long
    available_points: Long
    expired_unswept_points: Long
    debt_points: Long
    # What the asker may see of lots and history: all, or a partner's own.
    history_first: strawberry.Private[int]
    partner_only: strawberry.Private[str | None]

    @strawberry.field(
        description="Open lots, oldest first, at most `first` (≤ 100) after `afterLotId`"
        " (a partner sees those it issued)."
    )
    async def lots(
        self, info: Info[ApiContext, None], first: int = 100, after_lot_id: str | None = None
    ) -> list[Lot]:
        if not 1 <= first <= LOTS_FIRST_MAX:
            raise BadInput(f"first must be 1–{LOTS_FIRST_MAX}")
        after = None
        if after_lot_id is not None:
            match = _LOT_ID.fullmatch(after_lot_id)
            if match is None:
                raise BadInput("afterLotId is a lot id (seq:index)")
            after = (int(match[1]), int(match[2]))
        key = (self.member_id, first, self.partner_only, after)
        found = await info.context.loaders.lots.load(key)
        return [
            Lot(
                lot_id=x.lot_id,
                origin=x.origin,
                expires_at=None if x.expires_us is None else format_time_us(x.expires_us),
                amount_opened=x.amount_opened,
                remaining=x.remaining,
            )
            for x in found
        ]

    @strawberry.field(description="Newest first (a partner sees its own transactions).")
    async def history(self, info: Info[ApiContext, None]) -> list[HistoryLine]:
        scope = None if self.partner_only is None else f"partner:{self.partner_only}"
        key = (self.member_id, self.history_first, scope)
        found = await info.context.loaders.history.load(key)
        return [
            HistoryLine(
                seq=h.seq,
                time=format_time_us(h.time_us),
                kind=h.kind,
                amount_points=h.amount_points,
                balance_after_points=h.balance_after_points,
            )
            for h in found
        ]


@strawberry.type
class PartnerReport:
    partner_id: str
    legal_name: str
    status: str
    settlement_currency: str
    issued_points: Long
    redeemed_at_partner_points: Long
    redeemed_elsewhere_points: Long
    expired_points: Long
    outstanding_points: Long


@strawberry.type
class JournalEntry:
    seq: Long
    time: str
    kind: str
    ref_scope: str
    ref_key: str
    canonical_json: str
    leaf_hash_hex: str


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class JournalEntryEdge:
    cursor: str
    node: JournalEntry


@strawberry.type
class JournalEntryConnection:
    edges: list[JournalEntryEdge]
    page_info: PageInfo


@strawberry.type
class Checkpoint:
    checkpoint_id: Long
    tree_size: Long
    root_hash_hex: str
    signed_note: str
    signed_at: str  # RFC 3339, UTC: when the server signed it (the note carries no time)


@strawberry.type
class InclusionProof:
    seq: Long
    tree_size: Long
    leaf_hash_hex: str
    audit_path_base64: list[str]
    checkpoint: Checkpoint
    receipt: str  # C2SP tlog-proof@v1 with the entry as extra data


@strawberry.type
class FlowCell:
    issuer: str
    redeemed_at: str
    points: Long


@strawberry.type
class Kpis:
    partners_active: int
    members_enrolled: int
    members_active: int
    purchases: int
    purchase_frequency: str
    points_issued: Long
    points_redeemed: Long
    points_expired: Long
    redemption_rate: str
    breakage_rate: str
    flow: list[FlowCell]


@strawberry.type(
    description="One partner's figures for a period. Rates are of what it issued in the"
    " period: redemption = its points redeemed anywhere / issued, breakage = its points"
    " expired / issued (decimal strings, 4 places)."
)
class PartnerKpis:
    partner_id: str
    points_issued: Long
    points_redeemed_at: Long = strawberry.field(
        description="Redeemed at this partner, whoever issued them (refunds net)."
    )
    points_redeemed_of_issuance: Long = strawberry.field(
        description="This partner's points redeemed anywhere (refunds net)."
    )
    points_expired: Long
    redemption_rate: str
    breakage_rate: str
    members_active: int = strawberry.field(
        description="Members who earned or redeemed at this partner in the period."
    )


@strawberry.enum
class SettlementWarningCode(enum.Enum):
    NO_BANK_ACCOUNT = "NO_BANK_ACCOUNT"  # a party to be paid has no bank account on record
    FX_RATE_MISSING = "FX_RATE_MISSING"  # a rate the run needs was not recorded for it


@strawberry.type(
    description="What stands between a run and its payment: a party that cannot be paid"
    " (no bank account before the cut) or an exchange rate the run lacks."
)
class SettlementWarning:
    code: SettlementWarningCode
    party: str
    currency: str  # the payment's currency; for a rate, the one converted from
    quote_currency: str | None  # for a rate: the currency converted into
    message: str


@strawberry.type
class SettlementRun:
    run_id: str
    period: str
    revision: int
    status: str
    start_seq: Long
    end_seq: Long
    computed_by: str
    approved_by: str | None
    run_json: str
    cursor: str = strawberry.field(
        description="This run's place in the list: settlementRuns(after: …) answers the"
        " runs computed before it, settlementRuns(before: …) those computed after it."
    )

    @strawberry.field(
        description="Parties that cannot be paid and rates missing, judged at the run's cut"
        " (empty: payable). Approval is refused while any remain."
    )
    async def warnings(self, info: Info[ApiContext, None]) -> list[SettlementWarning]:
        import json

        from coalition import payable

        run = json.loads(self.run_json)
        facts = await info.context.db(payable.facts_at, payable.cut_size(run))
        return [settlement_warning(p) for p in payable.problems(run, facts)]


def settlement_warning(problem: Problem) -> SettlementWarning:
    return SettlementWarning(
        code=SettlementWarningCode(problem.code),
        party=problem.party,
        currency=problem.currency,
        quote_currency=problem.quote_currency,
        message=str(problem),
    )


@strawberry.type(description="A run this partner is a party to, and its statements.")
class PartnerRun:
    run_id: str
    period: str
    revision: int
    status: str
    statement_formats: list[str]  # json, csv, pdf: fetch one with statement(runId, party)
    cursor: str = strawberry.field(
        description="This run's place in the list: myRuns(after: …) answers the older ones."
    )


@strawberry.type
class Statement:
    run_id: str
    party: str
    format: str
    content: str  # JSON or CSV as text; PDF as base64


@strawberry.type(
    description="A pain.001.001.09 credit-transfer file for an approved run: the payments"
    " the coalition makes from its clearing account; confirm each by its end-to-end id."
)
class PaymentFile:
    run_id: str
    message_id: str  # new for every file made: banks refuse a repeated one
    execution_date: str  # YYYY-MM-DD
    end_to_end_ids: list[str]
    content: str  # the XML document, UTF-8


@strawberry.type
class Reconciliation:
    reconciliation_id: Long
    partner_id: str
    matched: int
    missing_ours: int
    missing_theirs: int
    mismatched: int
    result_json: str


@strawberry.type
class ApiKey:
    key_id: str
    role: Role
    partner_id: str | None
    label: str
    revoked: bool
    expires_at: str | None = None  # RFC 3339, UTC; none: the key does not expire


@strawberry.type
class CreatedApiKey:
    key: str  # shown once; only its hash is kept
    info: ApiKey


@strawberry.type(
    description="Where an as-of answer stands: the balances are those after the first"
    " `treeSize` entries, whose Merkle root is `rootHashHex`; `checkpoint` is the newest"
    " signed checkpoint holding them (null: none yet) and `consistencyPathBase64` the RFC 9162"
    " proof from `treeSize` to it."
)
class AsOfProof:
    tree_size: Long
    root_hash_hex: str
    checkpoint: Checkpoint | None
    consistency_path_base64: list[str]


@strawberry.type
class AccountAsOf:
    account: str
    balance_points: Long
    lots: list[Lot]  # holding points then, oldest first (expired, unswept ones included)


@strawberry.type(description="A member's points as of a seq or a time.")
class MemberAsOf:
    member_id: str
    account: AccountAsOf
    proof: AsOfProof


@strawberry.type(description="A partner's own accounts as of a seq or a time.")
class PartnerAsOf:
    partner_id: str
    accounts: list[AccountAsOf]
    proof: AsOfProof

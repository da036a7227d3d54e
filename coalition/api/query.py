"""Queries. Authorisation happens here, per field: a partner key sees its own
transactions, statements and reconciliations and members' balances; a foreign or unknown
object is the same ``null`` either way, so answers say nothing of other partners."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any, TypeVar

import strawberry
from strawberry.types import Info

from coalition import quote, reports
from coalition.api import convert, convert_partner, convert_runs
from coalition.api.context import ApiContext
from coalition.api.errors import BadInput
from coalition.api.mutation import MemberRef
from coalition.api.results import PaymentFileResult, RedeemQuoteResult, refusal
from coalition.api.types import (
    Checkpoint,
    InclusionProof,
    JournalEntry,
    JournalEntryConnection,
    Kpis,
    Long,
    Me,
    Member,
    MemberAsOf,
    PartnerAsOf,
    PartnerKpis,
    PartnerReport,
    PartnerRun,
    Reconciliation,
    Role,
    SettlementRun,
    Statement,
)
from coalition.api_keys import Principal
from coalition.balances_as_of import PositionUnavailable
from coalition.outcomes import Refusal
from coalition.time_input import parse_instant
from ledger import checkpoint_log, proofs

PAGE_SIZE_MAX = 100
READERS = ("auditor", "finance", "operator")
EVERYONE = ("partner", *READERS)

Ctx = Info[ApiContext, None]

T = TypeVar("T")


@strawberry.type
class Query:
    @strawberry.field(description="Who this API key is.")
    def me(self, info: Ctx) -> Me:
        who = info.context.who(own_records=True)
        return Me(role=Role(who.role), partner_id=who.partner_id, key_id=who.key_id)

    @strawberry.field(description="A member's points (members are coalition-wide).")
    async def member(self, info: Ctx, member_id: str, history_first: int = 20) -> Member | None:
        who = info.context.who(*EVERYONE)
        first = _page(history_first)
        found = await info.context.loaders.balance.load(member_id)
        partner_only = who.partner_id if who.role == "partner" else None
        return None if found is None else convert.member(found, first, partner_only)

    @strawberry.field(description="A partner's points position (own partner only, for partners).")
    async def partner(self, info: Ctx, partner_id: str) -> PartnerReport | None:
        who = info.context.who(*EVERYONE, own_records=True)
        if who.role == "partner" and who.partner_id != partner_id:
            return None
        return await info.context.read(convert.partner, partner_id)

    @strawberry.field(description="Journal entries in seq order, keyset-paged.")
    async def journal_entries(
        self,
        info: Ctx,
        first: int = 50,
        after: str | None = None,
        kind: str | None = None,
        account: str | None = None,
    ) -> JournalEntryConnection:
        who = info.context.who(*EVERYONE, own_records=True)
        scope = _scope(who) if who.role == "partner" else None
        return await info.context.read(
            convert.entries, _page(first), _cursor(after), kind, account, scope
        )

    @strawberry.field(description="One entry by its sequence number.")
    async def entry(self, info: Ctx, seq: Long) -> JournalEntry | None:
        who = info.context.who(*EVERYONE, own_records=True)
        stored = await info.context.loaders.entry.load(seq) if seq >= 0 else None
        if stored is None or (who.role == "partner" and stored.ref_scope != _scope(who)):
            return None
        return convert.journal_entry(stored)

    @strawberry.field(description="Signed checkpoints, oldest first.")
    async def checkpoints(self, info: Ctx, first: int = 50, after_id: Long = 0) -> list[Checkpoint]:
        info.context.who(*EVERYONE, own_records=True)
        rows = await info.context.read(
            checkpoint_log.list_checkpoints, after_id=after_id, limit=_page(first)
        )
        return [convert.checkpoint(r) for r in rows]

    @strawberry.field(
        description="An entry's inclusion proof against the latest (or a given) checkpoint."
    )
    async def inclusion_proof(
        self, info: Ctx, seq: Long, checkpoint_id: Long | None = None
    ) -> InclusionProof | None:
        who = info.context.who(*EVERYONE, own_records=True)
        scope = f"partner:{who.partner_id}" if who.role == "partner" else None
        return await info.context.read(convert.inclusion, seq, checkpoint_id, scope)

    @strawberry.field(description="RFC 9162 consistency proof between two tree sizes (base64).")
    async def consistency_proof(self, info: Ctx, from_size: Long, to_size: Long) -> list[str]:
        info.context.who(*EVERYONE, own_records=True)
        try:
            path = await _read_or_primary(
                info, proofs.ProofUnavailable, proofs.consistency_proof, from_size, to_size
            )
        except proofs.ProofUnavailable as exc:
            raise BadInput(str(exc)) from None
        return [base64.b64encode(h).decode() for h in path]

    @strawberry.field(description="Coalition KPIs and the cross-partner flow for a period.")
    async def kpis(self, info: Ctx, from_time: str, to_time: str) -> Kpis:
        info.context.who(*READERS)
        try:
            start, end = parse_instant(from_time), parse_instant(to_time)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        return convert.kpis(await info.context.job(reports.kpis, start, end))

    @strawberry.field(
        description="KPIs per partner for a period, partners by id, keyset-paged (`after`"
        " a partner id). A partner key gets its own row only, whatever it asks."
    )
    async def partner_kpis(
        self,
        info: Ctx,
        from_time: str,
        to_time: str,
        first: int = 50,
        after: str | None = None,
        partner_id: str | None = None,
    ) -> list[PartnerKpis]:
        who = info.context.who(*EVERYONE, own_records=True)
        try:
            start, end = parse_instant(from_time), parse_instant(to_time)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        return await info.context.db(
            convert_runs.visible_partner_kpis, who, (start, end), _page(first), after, partner_id
        )

    @strawberry.field(
        description="Settlement runs, newest first, keyset-paged: `after` a run's cursor"
        " the (at most `first`) runs computed before it, `before` a cursor those computed"
        " after it (still newest first); not both."
    )
    async def settlement_runs(
        self, info: Ctx, first: int = 20, after: str | None = None, before: str | None = None
    ) -> list[SettlementRun]:
        info.context.who(*READERS)
        if after is not None and before is not None:
            raise BadInput("give after or before, not both")
        older = after is not None
        position = convert_runs.read_run_cursor(after if older else before)
        return await info.context.db(convert_runs.runs, _page(first), position, older)

    @strawberry.field(description="One settlement run by its id.")
    async def settlement_run(self, info: Ctx, run_id: str) -> SettlementRun | None:
        info.context.who(*READERS)
        return await info.context.db(convert_runs.run, run_id)

    @strawberry.field(
        description="Partner: the settlement runs this partner is a party to (newest first),"
        " with the statement formats it may fetch; never another partner's. Keyset-paged:"
        " `after` a run's cursor, the older ones."
    )
    async def my_runs(
        self, info: Ctx, first: int = 20, after: str | None = None
    ) -> list[PartnerRun]:
        who = info.context.who("partner", own_records=True)
        return await info.context.db(
            convert_runs.partner_runs,
            who.partner_id or "",
            _page(first),
            convert_runs.read_run_cursor(after),
        )

    @strawberry.field(description="A party's statement of a run (own statements, for partners).")
    async def statement(
        self, info: Ctx, run_id: str, party: str, format: str = "json"
    ) -> Statement | None:
        who = info.context.who(*EVERYONE, own_records=True)
        if who.role == "partner" and who.partner_id != party:
            return None
        if format not in ("json", "csv", "pdf"):
            raise BadInput("format is json, csv or pdf")
        return await info.context.job(convert.statement, run_id, party, format)

    @strawberry.field(
        graphql_type=PaymentFileResult,
        description="Finance: a pain.001.001.09 file paying an approved run's payees"
        " (executionDate YYYY-MM-DD, not in the past; left out, tomorrow). A new message id"
        " every time; the end-to-end ids stay the run's, for confirmPayment.",
    )
    async def payment_file(self, info: Ctx, run_id: str, execution_date: str | None = None) -> Any:
        info.context.who("finance")
        outcome = await info.context.job(convert.payment_file, run_id, execution_date)
        return refusal(outcome) if isinstance(outcome, Refusal) else outcome

    @strawberry.field(description="Reconciliation results (own, for partners).")
    async def reconciliations(
        self, info: Ctx, partner_id: str, first: int = 20
    ) -> list[Reconciliation]:
        who = info.context.who(*EVERYONE, own_records=True)
        if who.role == "partner" and who.partner_id != partner_id:
            return []
        return await info.context.db(convert.reconciliations, partner_id, _page(first))

    @strawberry.field(
        graphql_type=RedeemQuoteResult,
        description="Partner: would `redeem` succeed now, drawing on which lots (so which"
        " issuers), leaving what debt? The redemption's own checks and rules, judged in a"
        " read-only snapshot: nothing is written. With `reference`, a used one says replayed.",
    )
    async def redeem_quote(
        self, info: Ctx, member: MemberRef, points: Long, reference: str | None = None
    ) -> Any:
        who = info.context.who("partner")
        outcome = await info.context.db(
            lambda conn: quote.quote_redemption(
                info.context.coalition,
                conn,
                partner_id=who.partner_id or "",
                points=points,
                member_id=member.member_id,
                card_number=member.card_number,
                ref_key=reference,
            )
        )
        if isinstance(outcome, Refusal):
            return refusal(outcome)
        return convert_partner.redemption_quote(outcome, who.partner_id or "")

    @strawberry.field(
        description="A member's points after entry `atSeq`, or after every entry stamped at"
        " or before `atTime` (one of them), with the lots then (a partner sees those it"
        " issued) and the proof binding the answer to the journal's root at that size."
    )
    async def member_as_of(
        self,
        info: Ctx,
        member_id: str,
        at_seq: Long | None = None,
        at_time: str | None = None,
    ) -> MemberAsOf | None:
        who = info.context.who(*EVERYONE)
        seq, time_us = _position(at_seq, at_time)
        lots_of = who.partner_id if who.role == "partner" else None
        try:
            return await _read_or_primary(
                info,
                PositionUnavailable,
                convert_partner.member_as_of,
                member_id,
                seq,
                time_us,
                lots_of,
            )
        except PositionUnavailable as exc:
            raise BadInput(str(exc)) from None

    @strawberry.field(
        description="A partner's accounts (points issued, redeemed at it) after entry"
        " `atSeq` or at `atTime`, with the proof; a partner key sees its own only."
    )
    async def partner_as_of(
        self,
        info: Ctx,
        partner_id: str,
        at_seq: Long | None = None,
        at_time: str | None = None,
    ) -> PartnerAsOf | None:
        who = info.context.who(*EVERYONE)
        if who.role == "partner" and who.partner_id != partner_id:
            return None
        seq, time_us = _position(at_seq, at_time)
        try:
            return await _read_or_primary(
                info, PositionUnavailable, convert_partner.partner_as_of, partner_id, seq, time_us
            )
        except PositionUnavailable as exc:
            raise BadInput(str(exc)) from None


async def _read_or_primary(
    info: Ctx, not_yet: type[Exception], fn: Callable[..., T], *args: Any
) -> T:
    """A read the replica may answer; one it cannot yet (a size or seq past what it has
    replayed raises ``not_yet``) is asked of the primary, whose answer stands."""
    try:
        return await info.context.read(fn, *args)
    except not_yet:
        return await info.context.db(fn, *args)


def _position(at_seq: int | None, at_time: str | None) -> tuple[int | None, int | None]:
    if (at_seq is None) == (at_time is None):
        raise BadInput("give exactly one of atSeq or atTime")
    return at_seq, None if at_time is None else parse_instant(at_time)


def _scope(who: Principal) -> str:
    return f"partner:{who.partner_id}"


def _page(first: int) -> int:
    if not 1 <= first <= PAGE_SIZE_MAX:
        raise BadInput(f"first must be 1–{PAGE_SIZE_MAX}")
    return first


def _cursor(after: str | None) -> int:
    if after is None:
        return -1
    try:
        return int(json.loads(base64.urlsafe_b64decode(after.encode()))["seq"])
    except (ValueError, KeyError, TypeError):
        raise BadInput("after is not a cursor this API gave") from None

"""Mutations: one use case each, every one taking the caller's reference for idempotency.

Till operations act for the partner the key belongs to (never another); operators manage
partners, terms and keys; finance runs settlement. Business outcomes come back as union
results; bad keys and roles are GraphQL errors."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.types import Info

from coalition import earn, members, partners, payable, redeem, refunds, settle
from coalition.api import convert, convert_partner, convert_runs
from coalition.api.context import ApiContext
from coalition.api.errors import BadInput
from coalition.api.results import (
    Authorised,
    AuthoriseResult,
    CaptureResult,
    Earned,
    EarnResult,
    ImportBatchResult,
    IssuerPoints,
    PartyNotPayable,
    Recorded,
    RecordResult,
    Redeemed,
    RedeemResult,
    Refunded,
    RefundResult,
    Voided,
    VoidResult,
    refusal,
)
from coalition.api.types import (
    CreatedApiKey,
    Long,
    Reconciliation,
    Role,
    SettlementRun,
    settlement_warning,
)
from coalition.api_keys import Principal, create_key, revoke_key
from coalition.earning import EarningRules
from coalition.outcomes import Refusal, RefusalCode
from coalition.time_input import parse_instant
from ledger.timefmt import format_time_us, now_us
from settlement.reconcile import InvalidRecords
from settlement.terms import PartnerTerms

Ctx = Info[ApiContext, None]


@strawberry.input
class MemberRef:
    member_id: str | None = None
    card_number: str | None = None


def _invalid(detail: str) -> Any:
    """The union refusal InvalidRequest, for arguments a use case would refuse anyway."""
    return refusal(Refusal(RefusalCode.INVALID_REQUEST, detail))


def _till(info: Ctx, *roles: str) -> Principal | Any:
    """The caller, or — for a suspended partner's key — the union refusal
    PARTNER_SUSPENDED: such a key writes nothing (docs/DESIGN.md, "Suspended partners").
    The journal's guard refuses the same in the transaction that writes, for a
    suspension that commits after this key was checked."""
    who = info.context.who(*roles, own_records=True)
    if who.suspended:
        detail = f"partner {who.partner_id} is suspended"
        return refusal(Refusal(RefusalCode.PARTNER_SUSPENDED, detail))
    return who


def _answer(outcome: Any, success: Any) -> Any:
    return refusal(outcome) if isinstance(outcome, Refusal) else success(outcome)


def _recorded(outcome: Any) -> Any:
    return _answer(outcome, lambda r: Recorded(seq=r.seq, replayed=r.replayed))


def _redeemed(r: Any) -> Redeemed:
    return Redeemed(
        seq=r.seq,
        points=r.points,
        replayed=r.replayed,
        by_issuer=[IssuerPoints(issuer=k, points=v) for k, v in r.points_by_issuer.items()],
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(graphql_type=EarnResult, description="Points for a purchase.")
    async def earn(
        self,
        info: Ctx,
        reference: str,
        member: MemberRef,
        purchase_minor: Long,
        currency: str,
        category: str | None = None,
    ) -> Any:
        who = _till(info, "partner")
        if not isinstance(who, Principal):
            return who
        outcome = await info.context.db(
            lambda conn: earn.earn_points(
                info.context.tills,
                conn,
                partner_id=who.partner_id or "",
                ref_key=reference,
                purchase_minor=purchase_minor,
                currency=currency,
                member_id=member.member_id,
                card_number=member.card_number,
                category=category,
            )
        )
        return _answer(
            outcome, lambda r: Earned(seq=r.seq, points=r.points, tier=r.tier, replayed=r.replayed)
        )

    @strawberry.mutation(graphql_type=RedeemResult, description="Spend points at the till.")
    async def redeem(self, info: Ctx, reference: str, member: MemberRef, points: Long) -> Any:
        who = _till(info, "partner")
        if not isinstance(who, Principal):
            return who
        outcome = await info.context.db(
            lambda conn: redeem.redeem_points(
                info.context.tills,
                conn,
                partner_id=who.partner_id or "",
                ref_key=reference,
                points=points,
                member_id=member.member_id,
                card_number=member.card_number,
            )
        )
        return _answer(outcome, _redeemed)

    @strawberry.mutation(graphql_type=AuthoriseResult, description="Reserve points (a hold).")
    async def authorise(
        self, info: Ctx, reference: str, member: MemberRef, points: Long, hold_seconds: int = 900
    ) -> Any:
        who = _till(info, "partner")
        if not isinstance(who, Principal):
            return who
        outcome = await info.context.db(
            lambda conn: redeem.authorise(
                info.context.tills,
                conn,
                partner_id=who.partner_id or "",
                ref_key=reference,
                points=points,
                member_id=member.member_id,
                card_number=member.card_number,
                hold_seconds=hold_seconds,
            )
        )
        return _answer(
            outcome,
            lambda r: Authorised(
                hold_seq=r.hold_seq,
                points=r.points,
                expires_at=format_time_us(r.expires_us),
                replayed=r.replayed,
            ),
        )

    @strawberry.mutation(graphql_type=CaptureResult, description="Capture (part of) a hold.")
    async def capture(self, info: Ctx, reference: str, hold_seq: Long, points: Long) -> Any:
        who = _till(info, "partner")
        if not isinstance(who, Principal):
            return who
        outcome = await info.context.db(
            lambda conn: redeem.capture(
                info.context.tills,
                conn,
                partner_id=who.partner_id or "",
                ref_key=reference,
                hold_seq=hold_seq,
                points=points,
            )
        )
        return _answer(outcome, _redeemed)

    @strawberry.mutation(graphql_type=VoidResult, description="Release a hold.")
    async def void(self, info: Ctx, reference: str, hold_seq: Long) -> Any:
        who = _till(info, "partner")
        if not isinstance(who, Principal):
            return who
        outcome = await info.context.db(
            lambda conn: redeem.void(
                info.context.tills,
                conn,
                partner_id=who.partner_id or "",
                ref_key=reference,
                hold_seq=hold_seq,
            )
        )
        return _answer(outcome, lambda r: Voided(seq=r.seq, replayed=r.replayed))

    @strawberry.mutation(graphql_type=RefundResult, description="Refund (part of) a purchase.")
    async def refund_purchase(
        self, info: Ctx, reference: str, earn_reference: str, refund_minor: Long
    ) -> Any:
        who = _till(info, "partner")
        if not isinstance(who, Principal):
            return who
        outcome = await info.context.db(
            lambda conn: refunds.refund_purchase(
                info.context.tills,
                conn,
                partner_id=who.partner_id or "",
                ref_key=reference,
                earn_ref_key=earn_reference,
                refund_minor=refund_minor,
            )
        )
        return _answer(outcome, _refunded)

    @strawberry.mutation(graphql_type=RefundResult, description="Give redeemed points back.")
    async def refund_redemption(
        self, info: Ctx, reference: str, redemption_reference: str, points: Long
    ) -> Any:
        who = _till(info, "partner")
        if not isinstance(who, Principal):
            return who
        outcome = await info.context.db(
            lambda conn: refunds.refund_redemption(
                info.context.tills,
                conn,
                partner_id=who.partner_id or "",
                ref_key=reference,
                redemption_ref_key=redemption_reference,
                points=points,
            )
        )
        return _answer(outcome, _refunded)

    @strawberry.mutation(
        graphql_type=ImportBatchResult,
        description="Partner: a batch file (docs/BATCH.md; `format` csv or jsonl) as text,"
        " within the request body's 1 MiB; larger files go by `coalition batch import`."
        " Each record runs the single call's use case with its own reference; the answer"
        " is a result per line and the totals. A re-submitted batch replays; a batch whose"
        " trailer does not add up is refused whole (CONTROL_TOTALS_MISMATCH).",
    )
    async def import_batch(self, info: Ctx, batch: str, format: str) -> Any:
        who = info.context.who("partner")
        outcome = await info.context.job(
            convert_partner.imported_batch,
            info.context.coalition,
            who.partner_id or "",
            batch.encode(),
            format,
        )
        return refusal(outcome) if isinstance(outcome, Refusal) else outcome

    @strawberry.mutation(graphql_type=RecordResult, description="Enrol a member (idempotent).")
    async def enroll_member(self, info: Ctx, member_id: str) -> Any:
        who = _till(info, "partner", "operator")
        if not isinstance(who, Principal):
            return who
        return _recorded(
            await info.context.db(
                lambda conn: members.enroll_member(info.context.coalition, conn, member_id)
            )
        )

    @strawberry.mutation(graphql_type=RecordResult, description="Link this partner's card.")
    async def link_card(self, info: Ctx, member_id: str, card_number: str) -> Any:
        who = _till(info, "partner")
        if not isinstance(who, Principal):
            return who
        return _recorded(
            await info.context.db(
                lambda conn: members.link_card(
                    info.context.coalition, conn, member_id, who.partner_id or "", card_number
                )
            )
        )

    @strawberry.mutation(
        graphql_type=RecordResult,
        description="Operator: erase a member's personal data (card index, secret); the"
        " journal records that it was done, nothing personal (docs/PRIVACY.md).",
    )
    async def erase_member(self, info: Ctx, reference: str, member_id: str) -> Any:
        info.context.who("operator")
        return _recorded(
            await info.context.db(
                lambda conn: members.erase_member(
                    info.context.coalition, conn, member_id, reference
                )
            )
        )

    @strawberry.mutation(graphql_type=RecordResult, description="Operator: a new partner.")
    async def onboard_partner(
        self, info: Ctx, partner_id: str, legal_name: str, settlement_currency: str
    ) -> Any:
        info.context.who("operator")
        return _recorded(
            await info.context.db(
                lambda conn: partners.onboard_partner(
                    info.context.coalition, conn, partner_id, legal_name, settlement_currency
                )
            )
        )

    @strawberry.mutation(graphql_type=RecordResult, description="Operator: suspend/reactivate.")
    async def set_partner_status(
        self, info: Ctx, reference: str, partner_id: str, status: str
    ) -> Any:
        info.context.who("operator")
        outcome = await info.context.db(
            lambda conn: partners.set_partner_status(
                info.context.coalition, conn, partner_id, status, reference
            )
        )
        if info.context.api_keys is not None:
            # This process checks the partner's keys afresh from its next request; the
            # others when the status change's notification reaches them (api.keycache).
            info.context.api_keys.forget_partner(partner_id)
        return _recorded(outcome)

    @strawberry.mutation(graphql_type=RecordResult, description="Operator: a new terms version.")
    async def publish_terms(
        self,
        info: Ctx,
        reference: str,
        partner_id: str,
        effective_from: str,
        issuance_price_per_point: str,
        redemption_rate_per_point: str,
        operator_fee_bps: int,
        breakage_share: str,
        cycle: str,
        mode: str,
    ) -> Any:
        info.context.who("operator")
        try:
            terms = PartnerTerms.from_json(
                {
                    "issuance_price_per_point": issuance_price_per_point,
                    "redemption_rate_per_point": redemption_rate_per_point,
                    "operator_fee_bps": operator_fee_bps,
                    "breakage_share": breakage_share,
                    "cycle": cycle,
                    "mode": mode,
                }
            )
            effective_us = parse_instant(effective_from)
        except ValueError as exc:
            return _invalid(str(exc))
        return _recorded(
            await info.context.db(
                lambda conn: partners.publish_terms(
                    info.context.coalition, conn, partner_id, terms, effective_us, reference
                )
            )
        )

    @strawberry.mutation(graphql_type=RecordResult, description="Operator: earning rules.")
    async def publish_earning_rules(
        self,
        info: Ctx,
        reference: str,
        partner_id: str,
        effective_from: str,
        currency: str,
        points_per_step: int,
        step_minor: Long,
        cap_points: Long | None = None,
    ) -> Any:
        info.context.who("operator")
        try:
            rules = EarningRules.from_json(
                {
                    "currency": currency,
                    "points_per_step": points_per_step,
                    "step_minor": step_minor,
                    "cap_points": cap_points,
                }
            )
            effective_us = parse_instant(effective_from)
        except ValueError as exc:
            return _invalid(str(exc))
        return _recorded(
            await info.context.db(
                lambda conn: partners.publish_earning_rules(
                    info.context.coalition, conn, partner_id, rules, effective_us, reference
                )
            )
        )

    @strawberry.mutation(
        description="Operator: a new API key (the key is shown once); expiresAt, an instant"
        " with its offset, ends it (refused from then on with API_KEY_EXPIRED)."
    )
    async def create_api_key(
        self,
        info: Ctx,
        role: Role,
        label: str,
        partner_id: str | None = None,
        expires_at: str | None = None,
    ) -> CreatedApiKey:
        info.context.who("operator")
        try:
            expires_us = None if expires_at is None else parse_instant(expires_at)
            key, created = await info.context.db(
                create_key, role.value, partner_id, label, now_us(), expires_us
            )
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        return CreatedApiKey(key=key, info=convert.api_key(created))

    @strawberry.mutation(description="Operator: revoke a key; it fails from the next request.")
    async def revoke_api_key(self, info: Ctx, key_id: str) -> bool:
        info.context.who("operator")
        revoked: bool = await info.context.db(revoke_key, key_id, now_us())
        if info.context.api_keys is not None:
            # This process refuses it from its next request; the others within a ping
            # (their listeners hear of it when the revocation commits: api.keycache).
            info.context.api_keys.forget(key_id)
        return revoked

    @strawberry.mutation(description="Finance: compute a period's run at a new signed cut.")
    async def compute_settlement(
        self, info: Ctx, period: str, correction: bool = False
    ) -> SettlementRun:
        who = info.context.who("finance")
        outcome = await info.context.job(
            lambda conn: settle.compute(
                info.context.coalition,
                conn,
                info.context.signer,
                period=period,
                computed_by=f"key:{who.key_id}",
                correction=correction,
            )
        )
        if isinstance(outcome, Refusal):
            raise await _compute_refused(info, period, outcome)
        run = await info.context.db(convert_runs.run, outcome.run_id)  # by id: any page
        assert run is not None, outcome.run_id
        return run

    @strawberry.mutation(
        graphql_type=RecordResult,
        description="Finance: approve (4 eyes). The approver is this key: a run computed"
        " with one key is approved with another (SAME_APPROVER otherwise); a run with a"
        " party that cannot be paid or a rate missing is refused (PARTY_NOT_PAYABLE).",
    )
    async def approve_settlement(self, info: Ctx, run_id: str) -> Any:
        who = info.context.who("finance")
        problems = await info.context.db(payable.approval_problems, run_id)
        if problems:
            return PartyNotPayable(
                code=RefusalCode.PARTY_NOT_PAYABLE,
                message=f"run {run_id} cannot be paid: {payable.describe(problems)}",
                problems=[settlement_warning(p) for p in problems],
            )
        return _recorded(
            await info.context.job(
                lambda conn: settle.approve(
                    info.context.coalition, conn, run_id, f"key:{who.key_id}"
                )
            )
        )

    @strawberry.mutation(graphql_type=RecordResult, description="Finance: a payment was made.")
    async def confirm_payment(self, info: Ctx, run_id: str, end_to_end_id: str) -> Any:
        who = info.context.who("finance")
        return _recorded(
            await info.context.db(
                lambda conn: settle.confirm_payment(
                    info.context.coalition, conn, run_id, end_to_end_id, f"key:{who.key_id}"
                )
            )
        )

    @strawberry.mutation(
        graphql_type=RecordResult,
        description="Operator: the bank account a partner is paid to (IBAN and BIC in"
        " electronic form, checked); a journal fact, the latest before a run's cut counts.",
    )
    async def set_bank_account(
        self, info: Ctx, reference: str, partner_id: str, legal_name: str, iban: str, bic: str
    ) -> Any:
        info.context.who("operator")
        return _recorded(
            await info.context.db(
                lambda conn: settle.set_bank_account(
                    info.context.coalition,
                    conn,
                    partner_id,
                    iban=iban,
                    bic=bic,
                    name=legal_name,
                    ref_key=reference,
                )
            )
        )

    @strawberry.mutation(
        graphql_type=RecordResult,
        description="Finance: the rate run `runId` converts with (1 base = rate quote), its"
        " source and date; a journal fact, recorded before the run is computed.",
    )
    async def record_fx_rate(
        self,
        info: Ctx,
        reference: str,
        run_id: str,
        base_currency: str,
        quote_currency: str,
        rate: str,
        source: str,
        rate_date: str,
    ) -> Any:
        info.context.who("finance")
        return _recorded(
            await info.context.db(
                lambda conn: settle.record_fx_rate(
                    info.context.coalition,
                    conn,
                    run_id=run_id,
                    base=base_currency,
                    quote=quote_currency,
                    rate=rate,
                    source=source,
                    rate_date=rate_date,
                    ref_key=reference,
                )
            )
        )

    @strawberry.mutation(description="A partner submits its records (CSV or JSON) of a period.")
    async def submit_reconciliation(
        self,
        info: Ctx,
        records: str,
        format: str,
        from_time: str,
        to_time: str,
        tolerance_seconds: int = 300,
    ) -> Reconciliation:
        who = info.context.who("partner")
        try:
            start, end = parse_instant(from_time), parse_instant(to_time)
            partner_id = who.partner_id or ""
            reconciliation_id, result = await info.context.job(
                settle.submit_reconciliation,
                partner_id,
                records.encode(),
                format,
                start,
                end,
                tolerance_seconds * 1_000_000,
            )
        except (ValueError, InvalidRecords) as exc:
            raise BadInput(str(exc)) from None
        return convert.reconciliation(partner_id, reconciliation_id, result)


async def _compute_refused(info: Ctx, period: str, outcome: Refusal) -> BadInput:
    """The error a refused compute raises; when inputs are missing, every rate missing is
    named (the run stops at the first), in the message and in ``extensions.problems``."""
    error = BadInput(str(outcome))
    if outcome.code is RefusalCode.SETTLEMENT_INPUT_MISSING:
        missing = await info.context.job(payable.pending_fx_rates, period)
        if missing:
            error = BadInput(f"{outcome}; every rate missing: {payable.describe(missing)}")
            error.extensions["problems"] = [  # type: ignore[assignment]
                {
                    "code": p.code,
                    "party": p.party,
                    "currency": p.currency,
                    "quoteCurrency": p.quote_currency,
                }
                for p in missing
            ]
    return error


def _refunded(r: Any) -> Refunded:
    return Refunded(seq=r.seq, points=r.points, debt_points=r.debt_points, replayed=r.replayed)

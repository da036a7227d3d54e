"""Conversions for the partner-integration fields: a redemption quote, balances as of a
position with their proof, and a batch import's answer."""

from __future__ import annotations

import base64
from typing import Any

from coalition import balances_as_of, quote
from coalition.api import convert
from coalition.api.results import BatchImported, IssuerPoints, LotDraw, RedemptionQuote
from coalition.api.types import AccountAsOf, AsOfProof, Lot, MemberAsOf, PartnerAsOf
from coalition.batch_format import Batch, parse_batch, write_results
from coalition.batch_import import import_batch
from coalition.context import Coalition, Conn
from coalition.outcomes import Refusal
from ledger.timefmt import format_time_us


def _time(time_us: int | None) -> str | None:
    return None if time_us is None else format_time_us(time_us)


def redemption_quote(q: quote.RedemptionQuote, partner_id: str) -> RedemptionQuote:
    """Another issuer's lot is named by its issuer, not its id: a lot id is the seq of
    another partner's entry (the redemption's own answer names issuers only)."""
    return RedemptionQuote(
        points=q.points,
        lots=[
            LotDraw(
                lot_id=d.lot_id if d.issuer == partner_id else None,
                issuer=d.issuer,
                points=d.points,
                expires_at=_time(d.expires_us),
            )
            for d in q.lots
        ],
        by_issuer=[IssuerPoints(issuer=k, points=v) for k, v in q.points_by_issuer.items()],
        debt_points=q.debt_points,
        replayed=q.replayed,
        tree_size=q.tree_size,
    )


def _proof(at: balances_as_of.Position) -> AsOfProof:
    return AsOfProof(
        tree_size=at.tree_size,
        root_hash_hex=at.root_hash.hex(),
        checkpoint=None if at.checkpoint is None else convert.checkpoint(at.checkpoint),
        consistency_path_base64=[base64.b64encode(h).decode() for h in at.consistency_path],
    )


def _account(found: balances_as_of.AccountAsOf) -> AccountAsOf:
    return AccountAsOf(
        account=found.account,
        balance_points=found.balance,
        lots=[
            Lot(
                lot_id=x.lot_id,
                origin=x.origin,
                expires_at=_time(x.expires_us),
                amount_opened=x.amount_opened,
                remaining=x.remaining,
            )
            for x in found.lots
        ],
    )


def member_as_of(
    conn: Conn, member_id: str, seq: int | None, time_us: int | None, lots_of: str | None
) -> MemberAsOf | None:
    """In one read-only snapshot, so the balances and the proof are of the same journal."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        at = balances_as_of.position(conn, seq=seq, time_us=time_us)
        found = balances_as_of.member_as_of(conn, member_id, at.tree_size, lots_of)
        if found is None:
            return None
        return MemberAsOf(member_id=member_id, account=_account(found), proof=_proof(at))


def partner_as_of(
    conn: Conn, partner_id: str, seq: int | None, time_us: int | None
) -> PartnerAsOf | None:
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        at = balances_as_of.position(conn, seq=seq, time_us=time_us)
        found = balances_as_of.partner_as_of(conn, partner_id, at.tree_size)
        if found is None:
            return None
        return PartnerAsOf(
            partner_id=partner_id, accounts=[_account(a) for a in found], proof=_proof(at)
        )


def imported_batch(conn: Conn, co: Coalition, partner_id: str, data: bytes, fmt: str) -> Any:
    """The batch's answer, or its refusal whole (then nothing was written)."""
    batch = parse_batch(data, fmt, partner_id)
    if isinstance(batch, Refusal):
        return batch
    assert isinstance(batch, Batch)
    text, totals = write_results(fmt, batch.batch_id, import_batch(co, conn, batch))
    return BatchImported(batch_id=batch.batch_id, result_file=text, **totals)

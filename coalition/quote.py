"""A redemption quote: what ``redeem.redeem_points`` would do now, without writing.

The same checks (``redeem.check_spend``), the same entry (``redeem.redemption_request``)
and the journal judging it as an append would, guards and ledger rules included — in a
read-only snapshot that is rolled back (``Journal.preview``). So the lots a quote names
are the ones the redemption takes if nothing changes in between; a redemption appended
later is judged again on the state it meets.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from coalition import accounts
from coalition.context import Coalition, Conn, refusal_for, stored_entry
from coalition.outcomes import Refusal
from coalition.redeem import check_spend, explain_shortfall, redemption_request
from ledger import reads
from ledger.rejections import Rejection


@dataclass(frozen=True, slots=True)
class LotDraw:
    lot_id: str
    issuer: str
    points: int
    expires_us: int | None


@dataclass(frozen=True, slots=True)
class RedemptionQuote:
    points: int
    tree_size: int  # the journal's size the quote was judged on
    lots: list[LotDraw] = field(default_factory=list)
    points_by_issuer: dict[str, int] = field(default_factory=dict)
    debt_points: int = 0  # the part of the debit no lot covers (§5 of FORMAT.md)
    replayed: bool = False  # the reference was used: the redemption would answer that


def quote_redemption(
    co: Coalition,
    conn: Conn,
    *,
    partner_id: str,
    points: int,
    member_id: str | None = None,
    card_number: str | None = None,
    ref_key: str | None = None,
) -> RedemptionQuote | Refusal:
    """The quote, or the refusal the redemption would get. Without ``ref_key`` a
    reference no entry can hold is judged (so never a replay)."""
    checked = check_spend(conn, partner_id, points, member_id, card_number)
    if isinstance(checked, Refusal):
        return checked
    member = checked
    ref = ref_key if ref_key is not None else f"quote:{secrets.token_hex(16)}"
    request = redemption_request(partner_id, ref, member, points)
    [(result, entry)] = co.journal.preview(conn, [request])
    if isinstance(result, Rejection):
        return explain_shortfall(conn, refusal_for(result), member, points, co.clock_us())
    if result.replayed:
        entry = stored_entry(conn, result.seq)
    assert entry is not None
    return _quote(conn, entry, member, result.seq, result.replayed)


def _quote(
    conn: Conn, entry: dict[str, Any], member: str, seq: int, replayed: bool
) -> RedemptionQuote:
    account = accounts.member(member)
    lots = {lot.lot_id: lot for lot in reads.lots(conn, account, open_only=False)}
    draws: list[LotDraw] = []
    debit = 0
    for posting in entry["postings"]:
        if posting["account"] != account:
            continue
        debit += -posting["amount"]
        for take in posting.get("lots", []):
            lot = lots[take["lot"]]
            draws.append(LotDraw(lot.lot_id, lot.origin, take["amount"], lot.expires_us))
    by_issuer: dict[str, int] = {}
    for draw in draws:
        by_issuer[draw.issuer] = by_issuer.get(draw.issuer, 0) + draw.points
    taken = sum(d.points for d in draws)
    return RedemptionQuote(
        points=debit,
        tree_size=seq if not replayed else seq + 1,
        lots=draws,
        points_by_issuer=dict(sorted(by_issuer.items())),
        debt_points=debit - taken,
        replayed=replayed,
    )

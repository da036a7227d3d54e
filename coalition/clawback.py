"""Which lots a purchase refund claws its points back from, and the debt it leaves.

Pure, so that the refund (on what it read) and coalition.guards (under the chain's lock,
on the lots as the batch left them) make the very same choice.
"""

from __future__ import annotations

from collections.abc import Iterable

from coalition import accounts
from ledger.requests import LotTake, PostingRequest
from ledger.state import Lot
from ledger.units import POINTS_UNIT


def clawback_postings(
    lots: Iterable[Lot], member: str, earn_seq: int, partner_id: str, points: int, now_us: int
) -> tuple[tuple[PostingRequest, ...], int]:
    """The postings of a clawback of ``points`` from the member's ``lots`` as they stand at
    ``now_us``, and the debt it leaves: the earn's own lot first, then the others
    first-expiring-first, then debt."""
    if points == 0:
        return (), 0
    usable = [lot for lot in lots if lot.remaining > 0 and not lot.is_expired(now_us)]
    own = [lot for lot in usable if lot.opened_seq == earn_seq]
    others = sorted(
        (lot for lot in usable if lot.opened_seq != earn_seq), key=lambda lot: lot.fefo_key()
    )
    takes: list[LotTake] = []
    by_origin: dict[str, int] = {}
    wanted = points
    for lot in own + others:
        if wanted == 0:
            break
        take = min(lot.remaining, wanted)
        takes.append(LotTake(lot.lot_id, take))
        by_origin[lot.origin] = by_origin.get(lot.origin, 0) + take
        wanted -= take
    debt = wanted  # already spent: the refunding partner's points come back as a debt
    if debt:
        by_origin[partner_id] = by_origin.get(partner_id, 0) + debt
    postings = [
        PostingRequest(
            accounts.member(member), POINTS_UNIT, -points, lots=tuple(takes), allow_debt=True
        )
    ]
    postings += [
        PostingRequest(accounts.issued(origin), POINTS_UNIT, amount)
        for origin, amount in sorted(by_origin.items())
    ]
    return tuple(postings), debt

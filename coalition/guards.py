"""The coalition's rules that are not about postings, judged inside the append.

A use case reads what it needs and builds its entry on its own connection; by the time
the entry is written (group-committed with others, perhaps) that reading may be stale.
So the journal calls ``before_append`` once per batch, with the chain locked, and the
guard returned judges each entry against state read under that lock, counting the
entries of the same batch that it let through before. What the ledger's own rules bound
(a correction within what it corrects, lots, holds, balances) is not repeated here.

- A refund of a purchase stays within the purchase's money, and claws back exactly the
  points that the cumulative rule gives for the refunds so far, from the lots the policy
  picks as they stand now (else the caller read a stale total or stale lots: ``BUSY``,
  and it recomputes).
- A refund of a redemption stays within the points redeemed, and gives back to the lots
  it chose for the points already refunded (else ``BUSY``).
- Earns, bonuses, redemptions and holds need the partner active and the member active
  at the moment of writing (a suspension or a block that committed first wins); so does
  every entry written in a partner's name (ref scope ``partner:<id>``: captures, voids,
  refunds, card links), because a suspended partner's keys write nothing.
- Nothing names an erased member again: no card link, status change or second erasure
  (an erasure that committed first wins: ``MEMBER_ERASED``).
- An earn is priced by the earning rules in force when it is written (a publication
  that committed first wins: ``BUSY``, and the till retries with the same reference),
  and at the member's tier when it is written: the rolling spend under the lock, with
  the earns and purchase refunds of the same batch before it (an earn or refund of the
  member that committed first, or came earlier in the batch, moves it: ``BUSY``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from coalition import accounts
from coalition.accounts import OPERATOR
from coalition.clawback import clawback_postings
from coalition.outcomes import RefusalCode
from coalition.tiers import TierPolicy
from ledger.rejections import Rejection, RejectionCode
from ledger.requests import EntryRequest
from ledger.state import State

Conn = Any  # a psycopg connection, in the batch's transaction

_PARTNER_SCOPE = "partner:"  # the ref scope of what a partner's key writes
_NEEDS_ACTIVE_PARTNER = frozenset({"earn", "redeem", "authorise"})
_NEEDS_ACTIVE_MEMBER = frozenset({"earn", "bonus", "redeem", "authorise"})
# Facts about a member that an erasure ends: nothing may name the member afterwards.
_NEEDS_UNERASED_MEMBER = frozenset({"card_linked", "member_status", "member_erased"})
_MEMBER_KINDS = _NEEDS_ACTIVE_MEMBER | _NEEDS_UNERASED_MEMBER


def _partners_needed_active(request: EntryRequest) -> set[str]:
    needed = set()
    kind, meta = request.kind, request.meta
    if kind in _NEEDS_ACTIVE_PARTNER or (kind == "bonus" and meta["partner"] != OPERATOR):
        needed.add(meta["partner"])
    if request.ref_scope.startswith(_PARTNER_SCOPE):
        needed.add(request.ref_scope.removeprefix(_PARTNER_SCOPE))
    return needed


def refused(code: RefusalCode, detail: str) -> Rejection:
    return Rejection(RejectionCode.PRECONDITION_FAILED, detail, code.value)


@dataclass(slots=True)
class _Earn:
    purchase_minor: int
    points: int
    refunded_minor: int
    clawed_back_points: int
    member_id: str
    currency: str
    time_us: int


@dataclass(slots=True)
class _Redemption:
    points: int
    refunded_points: int


@dataclass(slots=True)
class CoalitionGuard:
    earns: dict[int, _Earn] = field(default_factory=dict)
    redemptions: dict[int, _Redemption] = field(default_factory=dict)
    partner_status: dict[str, str] = field(default_factory=dict)
    member_status: dict[str, str] = field(default_factory=dict)
    # partner -> [(effective_from_us, version)] of its earning rules
    rules_versions: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    tiers: TierPolicy | None = None
    # member -> [(time_us, net purchase)] of their earns in the tier policy's currency
    # (from a day before the window: the batch's time is not known yet when it is read)
    spend: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    time_us: int = 0  # of the entry judged last: ``accepted`` follows its ``judge``

    def judge(self, request: EntryRequest, state: State, time_us: int) -> Rejection | None:
        meta, kind = request.meta, request.kind
        self.time_us = time_us
        for partner in _partners_needed_active(request):
            status = self.partner_status.get(partner)
            if status != "active":
                detail = f"partner {partner} is {status or 'unknown'}"
                return refused(RefusalCode.PARTNER_SUSPENDED, detail)
        if kind in _MEMBER_KINDS:
            status = self.member_status.get(meta["member"])
            if status is None:
                return refused(RefusalCode.UNKNOWN_MEMBER, f"no member {meta['member']}")
            if status == "erased":
                return refused(RefusalCode.MEMBER_ERASED, f"member {meta['member']} was erased")
            if status != "active" and kind in _NEEDS_ACTIVE_MEMBER:
                return refused(RefusalCode.MEMBER_BLOCKED, f"member {meta['member']} is {status}")
        if kind == "earn":
            in_force = max(
                (v for v in self.rules_versions.get(meta["partner"], ()) if v[0] <= time_us),
                default=None,
            )
            if in_force is None or in_force[1] != meta["rules_version"]:
                return refused(RefusalCode.BUSY, "the earning rules changed as it was priced")
            if self._tier_at(meta["member"], time_us) != meta.get("tier"):
                return refused(RefusalCode.BUSY, "the member's tier changed as it was priced")
        if kind == "refund_earn":
            earn = self.earns.get(meta["earn_seq"])
            if earn is None:
                return refused(RefusalCode.UNKNOWN_TRANSACTION, "no such earn")
            return _judge_purchase_refund(earn, request, state, time_us)
        if kind == "refund_redemption":
            redemption = self.redemptions.get(meta["redemption_seq"])
            if redemption is None:
                return refused(RefusalCode.UNKNOWN_TRANSACTION, "no such redemption")
            return _judge_redemption_refund(redemption, meta)
        return None

    def _tier_at(self, member_id: str, time_us: int) -> str | None:
        """The member's tier for an earn at ``time_us``, as ``earn._tier`` prices it."""
        if self.tiers is None:
            return None
        since_us = time_us - self.tiers.window_us
        spent = sum(m for t, m in self.spend.get(member_id, ()) if since_us < t <= time_us)
        tier = self.tiers.tier_for(spent)
        return None if tier is None else tier.name

    def _spent(self, member_id: str, currency: str, time_us: int, minor: int) -> None:
        if self.tiers is not None and currency == self.tiers.currency:
            self.spend.setdefault(member_id, []).append((time_us, minor))

    def accepted(self, request: EntryRequest) -> None:
        meta = request.meta
        if request.kind == "earn":
            self._spent(meta["member"], meta["currency"], self.time_us, meta["purchase_minor"])
        elif request.kind == "member_enrolled":
            self.member_status.setdefault(meta["member"], "active")
        elif request.kind == "member_status":
            self.member_status[meta["member"]] = meta["status"]
        elif request.kind == "member_erased":
            self.member_status[meta["member"]] = "erased"
        elif request.kind == "refund_earn":
            earn = self.earns[meta["earn_seq"]]
            earn.refunded_minor += meta["refund_minor"]
            earn.clawed_back_points += meta["points"]
            self._spent(earn.member_id, earn.currency, earn.time_us, -meta["refund_minor"])
        elif request.kind == "refund_redemption":
            self.redemptions[meta["redemption_seq"]].refunded_points += meta["points"]


def _judge_purchase_refund(
    earn: _Earn, request: EntryRequest, state: State, time_us: int
) -> Rejection | None:
    meta = request.meta
    refunded_after = earn.refunded_minor + meta["refund_minor"]
    if refunded_after > earn.purchase_minor:
        left = earn.purchase_minor - earn.refunded_minor
        detail = f"{left} of the purchase is left to refund"
        return refused(RefusalCode.REFUND_EXCEEDS_ORIGINAL, detail)
    due = earn.points * refunded_after // earn.purchase_minor - earn.clawed_back_points
    if meta["points"] != due:
        return refused(RefusalCode.BUSY, "another refund of this purchase came first; retry")
    # Lots first, debt only for what they lack: judged on the lots as they are now, not
    # as the refund read them (a concurrent spend or give-back changes the split).
    lots = state.account_lots(accounts.member(meta["member"]))
    wanted, _debt = clawback_postings(
        lots, meta["member"], meta["earn_seq"], meta["partner"], due, time_us
    )
    if wanted != request.postings:
        return refused(RefusalCode.BUSY, "the member's lots changed since the refund read them")
    return None


def _judge_redemption_refund(redemption: _Redemption, meta: dict[str, Any]) -> Rejection | None:
    if redemption.refunded_points + meta["points"] > redemption.points:
        left = redemption.points - redemption.refunded_points
        return refused(RefusalCode.REFUND_EXCEEDS_ORIGINAL, f"{left} points are left to refund")
    if meta["refunded_points_before"] != redemption.refunded_points:
        return refused(RefusalCode.BUSY, "another refund of this redemption came first; retry")
    return None


def before_append(
    conn: Conn, requests: Sequence[EntryRequest], clock_us: int
) -> CoalitionGuard | None:
    """Read, under the chain's lock, what this batch's entries are judged against: one
    statement per kind of state, and none for a batch that needs none. ``clock_us`` is
    about the batch's time (its entries' are not earlier than a moment before it)."""
    earn_seqs, redemption_seqs, partners, members = set(), set(), set(), set()
    earning, earners = set(), set()
    for r in requests:
        if r.kind == "earn":
            earning.add(r.meta["partner"])
            earners.add(r.meta["member"])
        if r.kind == "refund_earn":
            earn_seqs.add(r.meta["earn_seq"])
        elif r.kind == "refund_redemption":
            redemption_seqs.add(r.meta["redemption_seq"])
        partners.update(_partners_needed_active(r))
        if r.kind in _MEMBER_KINDS:
            members.add(r.meta["member"])
    if not (earn_seqs or redemption_seqs or partners or members):
        return None
    guard = CoalitionGuard()
    if earn_seqs:
        for seq, *row in conn.execute(
            "SELECT earn_seq, purchase_minor, points, refunded_minor, clawed_back_points,"
            " member_id, currency, time_us FROM coalition_earn WHERE earn_seq = ANY(%b::bigint[])",
            (sorted(earn_seqs),),
        ):
            guard.earns[seq] = _Earn(*row)
    if redemption_seqs:
        for seq, *row in conn.execute(
            "SELECT redemption_seq, points, refunded_points FROM coalition_redemption"
            " WHERE redemption_seq = ANY(%b::bigint[])",
            (sorted(redemption_seqs),),
        ):
            guard.redemptions[seq] = _Redemption(*row)
    if partners:
        guard.partner_status = dict(
            conn.execute(
                "SELECT partner_id, status FROM coalition_partner"
                " WHERE partner_id = ANY(%b::text[])",
                (sorted(partners),),
            ).fetchall()
        )
    for partner, effective_from_us, version in (
        conn.execute(
            "SELECT partner_id, effective_from_us, version FROM coalition_earning_rules"
            " WHERE partner_id = ANY(%b::text[])",
            (sorted(earning),),
        )
        if earning
        else ()
    ):
        guard.rules_versions.setdefault(partner, []).append((effective_from_us, version))
    if earners:
        _read_spend(conn, guard, sorted(earners), clock_us)
    if members:
        guard.member_status = dict(
            conn.execute(
                "SELECT member_id, status FROM coalition_member WHERE member_id = ANY(%b::text[])",
                (sorted(members),),
            ).fetchall()
        )
    return guard


_SPEND_MARGIN_US = 86_400_000_000  # a batch's entries are timed within a day of its clock


def _read_spend(conn: Conn, guard: CoalitionGuard, members: list[str], clock_us: int) -> None:
    """The tier policy and, if there is one, the earning members' recent net purchases."""
    row = conn.execute("SELECT policy FROM coalition_policy WHERE name = 'tiers'").fetchone()
    if row is None:
        return
    guard.tiers = TierPolicy.from_json(dict(row[0]))
    since_us = clock_us - guard.tiers.window_us - _SPEND_MARGIN_US
    for member, time_us, net_minor in conn.execute(
        "SELECT member_id, time_us, purchase_minor - refunded_minor FROM coalition_earn"
        " WHERE member_id = ANY(%b::text[]) AND currency = %s AND time_us > %s",
        (members, guard.tiers.currency, since_us),
    ):
        guard.spend.setdefault(member, []).append((time_us, net_minor))

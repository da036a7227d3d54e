"""Reports operators, partners and finance ask for — queries over the journal's tables
and the coalition read models, no screens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal

from coalition import accounts
from coalition.context import Conn
from ledger import reads
from ledger.journal import DEFAULT_CHAIN_ID
from ledger.state import Lot

HISTORY_PAGE_MAX = 500
LOTS_PAGE_MAX = 500


@dataclass(frozen=True, slots=True)
class MemberBalance:
    member_id: str
    status: str
    balance_points: int
    held_points: int
    available_points: int  # unexpired lots not reserved by holds
    expired_unswept_points: int
    debt_points: int


@dataclass(frozen=True, slots=True)
class MemberSummary(MemberBalance):
    lots: list[Lot]


# One statement for any number of members: what a page of tills asking at once costs.
_BALANCES = """
SELECT m.member_id, m.status, b.balance,
  COALESCE((SELECT sum(h.amount) FROM ledger_hold h WHERE h.chain_id = b.chain_id
            AND h.account = b.account
            AND h.status = 'active' AND h.expires_us > %(now)s), 0),
  COALESCE((SELECT sum(l.remaining) FROM ledger_lot l WHERE l.chain_id = b.chain_id
            AND l.account = b.account AND l.remaining > 0
            AND (l.expires_us IS NULL OR l.expires_us > %(now)s)), 0),
  COALESCE((SELECT sum(l.remaining) FROM ledger_lot l WHERE l.chain_id = b.chain_id
            AND l.account = b.account AND l.remaining > 0 AND l.expires_us <= %(now)s), 0)
FROM unnest(%(ids)s::text[], %(accounts)s::text[]) AS k(member_id, account)
JOIN coalition_member m USING (member_id)
JOIN ledger_balance b ON b.chain_id = %(chain)s AND b.account = k.account
"""


def member_balances(conn: Conn, member_ids: Sequence[str], now_us: int) -> dict[str, MemberBalance]:
    """Enrolled members' points as of ``now_us``; unknown ids are simply absent."""
    ids = list(member_ids)
    named = {
        "now": now_us,
        "ids": ids,
        "accounts": [accounts.member(m) for m in ids],
        "chain": DEFAULT_CHAIN_ID,
    }
    rows = conn.execute(_BALANCES, named).fetchall()
    found = {}
    for member_id, status, balance, held, unexpired, expired in rows:
        held, unexpired, expired = int(held), int(unexpired), int(expired)
        debt = max(0, unexpired + expired - balance)  # clawed back beyond what was left
        available = max(0, min(unexpired, balance) - held)
        found[member_id] = MemberBalance(member_id, status, balance, held, available, expired, debt)
    return found


def member_summary(conn: Conn, member_id: str, now_us: int) -> MemberSummary | None:
    found = member_balances(conn, [member_id], now_us).get(member_id)
    if found is None:
        return None
    balance = {f.name: getattr(found, f.name) for f in fields(found)}
    return MemberSummary(**balance, lots=reads.lots(conn, accounts.member(member_id)))


def member_lots(
    conn: Conn,
    member_ids: Sequence[str],
    *,
    limit: int = LOTS_PAGE_MAX,
    origin: str | None = None,
    after: tuple[int, int] | None = None,
) -> dict[str, list[Lot]]:
    """Open lots per member, oldest first, keyset-paged after a lot's (seq, posting
    index); with ``origin``, only the lots that issuer opened."""
    limit = max(1, min(limit, LOTS_PAGE_MAX))
    after_seq, after_index = after if after is not None else (-1, -1)
    member_of = {accounts.member(m): m for m in member_ids}
    rows = conn.execute(
        "SELECT l.* FROM unnest(%(accounts)s::text[]) AS k(account)"
        " CROSS JOIN LATERAL (SELECT lot_id, account, origin, expires_us, opened_seq,"
        "  posting_index, amount_opened, remaining FROM ledger_lot"
        "  WHERE chain_id = %(chain)s AND account = k.account AND remaining > 0"
        "  AND (%(origin)s::text IS NULL OR origin = %(origin)s)"
        "  AND (opened_seq, posting_index) > (%(seq)s, %(index)s)"
        "  ORDER BY opened_seq, posting_index LIMIT %(limit)s) l",
        {
            "accounts": list(member_of),
            "origin": origin,
            "seq": after_seq,
            "index": after_index,
            "limit": limit,
            "chain": DEFAULT_CHAIN_ID,
        },
    ).fetchall()
    found: dict[str, list[Lot]] = {m: [] for m in member_ids}
    for row in rows:
        found[member_of[row[1]]].append(Lot(*row))
    return found


@dataclass(frozen=True, slots=True)
class HistoryLine:
    seq: int
    time_us: int
    kind: str
    amount_points: int
    balance_after_points: int


def member_histories(
    conn: Conn,
    member_ids: Sequence[str],
    *,
    limit: int = 50,
    ref_scope: str | None = None,
    before_seq: int | None = None,
) -> dict[str, list[HistoryLine]]:
    """Newest first, keyset-paged by ``before_seq``; with ``ref_scope``, only the lines of
    entries written under that reference scope (a partner's own transactions)."""
    limit = max(1, min(limit, HISTORY_PAGE_MAX))
    rows = conn.execute(
        "SELECT k.member_id, h.* FROM unnest(%(ids)s::text[], %(accounts)s::text[])"
        " AS k(member_id, account)"
        " CROSS JOIN LATERAL (SELECT p.seq, e.time_us, e.kind, p.amount, p.balance_after"
        "  FROM ledger_posting p JOIN ledger_entry e ON e.chain_id = p.chain_id"
        "  AND e.seq = p.seq WHERE p.chain_id = %(chain)s AND p.account = k.account"
        "  AND p.seq < %(before)s"
        "  AND (%(scope)s::text IS NULL OR e.ref_scope = %(scope)s)"
        "  ORDER BY p.seq DESC, p.posting_index DESC LIMIT %(limit)s) h",
        {
            "ids": list(member_ids),
            "accounts": [accounts.member(m) for m in member_ids],
            "before": before_seq if before_seq is not None else 2**62,
            "scope": ref_scope,
            "limit": limit,
            "chain": DEFAULT_CHAIN_ID,
        },
    ).fetchall()
    found: dict[str, list[HistoryLine]] = {m: [] for m in member_ids}
    for member_id, *line in rows:
        found[member_id].append(HistoryLine(*line))
    return found


@dataclass(frozen=True, slots=True)
class PartnerReport:
    partner_id: str
    issued_points: int  # net of clawbacks
    redeemed_at_partner_points: int
    redeemed_elsewhere_points: int  # its issuance spent at other partners
    expired_points: int  # its issuance that expired
    outstanding_points: int  # its issuance still in members' lots


def partner_report(conn: Conn, partner_id: str) -> PartnerReport:
    def balance_of(account: str) -> int:
        row = conn.execute(
            "SELECT balance FROM ledger_balance WHERE chain_id = %s AND account = %s",
            (DEFAULT_CHAIN_ID, account),
        ).fetchone()
        return 0 if row is None else int(row[0])

    used = dict(
        conn.execute(
            "SELECT CASE WHEN kind = 'expire' THEN 'expired' ELSE 'elsewhere' END, sum(points)"
            " FROM coalition_lot_use WHERE origin = %s AND (kind = 'expire' OR ("
            " kind IN ('redeem', 'capture', 'refund_redemption') AND partner_id <> %s))"
            " GROUP BY 1",
            (partner_id, partner_id),
        ).fetchall()
    )
    outstanding = conn.execute(
        "SELECT coalesce(sum(remaining), 0) FROM ledger_lot WHERE origin = %s"
        " AND account LIKE 'member:%%'",
        (partner_id,),
    ).fetchone()
    return PartnerReport(
        partner_id,
        -balance_of(accounts.issued(partner_id)),
        balance_of(accounts.redeemed(partner_id)),
        int(used.get("elsewhere") or 0),
        int(used.get("expired") or 0),
        int(outstanding[0]) if outstanding else 0,
    )


@dataclass(frozen=True, slots=True)
class Kpis:
    start_us: int
    end_us: int
    partners_active: int
    members_enrolled: int
    members_active: int  # earned or redeemed in the period
    purchases: int
    purchase_frequency: Decimal  # purchases per active member
    average_purchase_minor: dict[str, int]  # per currency, rounded half-even
    points_issued: int
    points_redeemed: int
    points_expired: int
    redemption_rate: Decimal  # redeemed / issued in the period
    breakage_rate: Decimal  # expired / issued in the period
    flow_points: dict[tuple[str, str], int] = field(default_factory=dict)  # (issuer, at) → pts


def kpis(conn: Conn, start_us: int, end_us: int) -> Kpis:
    period = (start_us, end_us)
    (partners_active,) = conn.execute(
        "SELECT count(*) FROM coalition_partner WHERE status = 'active'"
    ).fetchone() or (0,)
    (members,) = conn.execute("SELECT count(*) FROM coalition_member").fetchone() or (0,)
    (active,) = conn.execute(
        "SELECT count(DISTINCT member_id) FROM (SELECT member_id FROM coalition_earn"
        " WHERE time_us >= %s AND time_us < %s UNION ALL SELECT member_id"
        " FROM coalition_redemption WHERE time_us >= %s AND time_us < %s) m",
        period + period,
    ).fetchone() or (0,)
    purchases = conn.execute(
        "SELECT currency, count(*), sum(purchase_minor), sum(points) FROM coalition_earn"
        " WHERE time_us >= %s AND time_us < %s GROUP BY currency ORDER BY currency",
        period,
    ).fetchall()
    count = sum(int(r[1]) for r in purchases if r[0])
    issued = sum(int(r[3]) for r in purchases)
    flows = conn.execute(
        "SELECT origin, partner_id, kind, sum(points) FROM coalition_lot_use"
        " WHERE time_us >= %s AND time_us < %s GROUP BY 1, 2, 3",
        period,
    ).fetchall()
    flow: dict[tuple[str, str], int] = {}
    redeemed = expired = 0
    for origin, partner, kind, points in flows:
        if kind in ("redeem", "capture", "refund_redemption"):
            flow[(origin, partner)] = flow.get((origin, partner), 0) + int(points)
            redeemed += int(points)
        elif kind == "expire":
            expired += int(points)
    return Kpis(
        start_us,
        end_us,
        int(partners_active),
        int(members),
        int(active),
        count,
        ratio(count, int(active)),
        {str(c): _half_even(int(total), int(n)) for c, n, total, _ in purchases if c},
        issued,
        redeemed,
        expired,
        ratio(redeemed, issued),
        ratio(expired, issued),
        {k: v for k, v in sorted(flow.items()) if v},
    )


def ratio(numerator: int, denominator: int) -> Decimal:
    if denominator == 0:
        return Decimal(0)
    return (Decimal(numerator) / Decimal(denominator)).quantize(Decimal("0.0001"))


def _half_even(total: int, count: int) -> int:
    from settlement.money import half_even_to_int

    return half_even_to_int(Decimal(total) / Decimal(count)) if count else 0


@dataclass(frozen=True, slots=True)
class RunListed:
    run_id: str
    period: str
    revision: int
    status: str
    computed_by: str
    approved_by: str | None
    statement_formats: tuple[str, ...]
    computed_at_us: int = 0  # with run_id, its place in the list (the keyset)


def runs_listed(
    conn: Conn, party: str | None, first: int, after: tuple[int, str] | None = None
) -> list[RunListed]:
    """Settlement runs, newest first (after ``after``, a run's computed-at and id, when
    given); with ``party``, only those it has statements in (every party to a run has):
    what a partner may see of the runs."""
    at, run_id = after if after is not None else (None, "")
    rows = conn.execute(
        "SELECT r.run_id, r.period, r.revision, r.status, r.computed_by, r.approved_by,"
        " array_remove(array_agg(DISTINCT s.format ORDER BY s.format), NULL),"
        " r.computed_at_us FROM coalition_settlement_run r"
        " LEFT JOIN coalition_statement s ON s.run_id = r.run_id"
        " AND (%(party)s::text IS NULL OR s.party = %(party)s)"
        " WHERE %(at)s::bigint IS NULL OR (r.computed_at_us, r.run_id) < (%(at)s, %(run)s)"
        " GROUP BY r.run_id"
        " HAVING %(party)s::text IS NULL OR count(s.party) > 0"
        " ORDER BY r.computed_at_us DESC, r.run_id DESC LIMIT %(first)s",
        {"party": party, "first": first, "at": at, "run": run_id},
    ).fetchall()
    return [
        RunListed(
            run_id=row[0],
            period=row[1],
            revision=row[2],
            status=row[3],
            computed_by=row[4],
            approved_by=row[5],
            statement_formats=tuple(row[6]),
            computed_at_us=int(row[7]),
        )
        for row in rows
    ]

"""Read models kept beside the journal: run by the journal inside each batch transaction.

Each handler turns one appended entry (its kind and metadata) into rows of the
``coalition_*`` tables, so the read models commit or roll back with the journal and can
be rebuilt by replaying it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ledger.journal import DEFAULT_CHAIN_ID, Appended
from ledger.requests import EntryRequest
from ledger.timefmt import parse_time_us

Conn = psycopg.Connection[Any]
Handler = Callable[[Conn, dict[str, Any], Appended], None]


def project(conn: Conn, appended: list[tuple[EntryRequest, Appended]]) -> None:
    """The batch's rows: a statement per kind for the kinds a batch holds by the thousand
    (earns, redemptions and their refunds: a statement per entry cost the append path
    ~100 µs of Python each), one per entry for the rare others. Those go first, in
    order (partners' and members' rows before anything that names them); then the new
    earns and redemptions; then the refunds' updates, which may name an earn or a
    redemption of this very batch."""
    moving: list[tuple[EntryRequest, Appended]] = []
    earns: list[tuple[dict[str, Any], Appended]] = []
    redemptions: list[tuple[dict[str, Any], Appended]] = []
    refunded_earns: dict[int, tuple[int, int]] = {}  # earn seq -> (minor, points) refunded
    refunded_redemptions: dict[int, int] = {}  # redemption seq -> points refunded
    for request, result in appended:
        kind, meta = request.kind, request.meta
        if kind in ("earn", "bonus"):
            earns.append((meta, result))
        elif kind in ("redeem", "capture"):
            redemptions.append((meta, result))
        elif kind == "refund_earn":
            minor, points = refunded_earns.get(meta["earn_seq"], (0, 0))
            refunded_earns[meta["earn_seq"]] = (
                minor + meta["refund_minor"],
                points + meta["points"],
            )
        elif kind == "refund_redemption":
            seq = meta["redemption_seq"]
            refunded_redemptions[seq] = refunded_redemptions.get(seq, 0) + meta["points"]
        else:
            handler = _HANDLERS.get(kind)
            if handler is not None:
                handler(conn, meta, result)
        if kind in _MOVES_LOTS:
            moving.append((request, result))
    if earns:
        _earned(conn, earns)
    if redemptions:
        _redeemed(conn, redemptions)
    if refunded_earns:
        _earns_refunded(conn, refunded_earns)
    if refunded_redemptions:
        _redemptions_refunded(conn, refunded_redemptions)
    if moving:
        _lot_use(conn, moving)


# Kinds whose member postings take or give back lots, and so move issuers' points.
_MOVES_LOTS = frozenset({"redeem", "capture", "expire", "refund_earn", "refund_redemption"})


def _lot_use(conn: Conn, moving: list[tuple[EntryRequest, Appended]]) -> None:
    """Record per issuer (lot origin) how many points each entry took from members: for
    the whole batch, one insert that finds the lots' origins itself. The lots are chosen
    by the ledger, so they are taken from the entries as appended (``Appended.entry``):
    reading them back cost the append a round trip, waiting for the chunk's writes."""
    seqs: list[int] = []
    kinds: list[str] = []
    partners: list[str] = []
    lot_ids: list[str] = []
    points: list[int] = []
    times: list[int] = []
    for request, r in moving:
        assert r.entry is not None, f"entry {r.seq} came without its body"
        partner = request.meta.get("partner", "coalition")
        for posting in r.entry["postings"]:
            if "lots" not in posting or not posting["account"].startswith("member:"):
                continue
            sign = -1 if posting["amount"] > 0 else 1  # a credit gives points back
            for take in posting["lots"]:
                seqs.append(r.seq)
                kinds.append(request.kind)
                partners.append(partner)
                lot_ids.append(take["lot"])
                points.append(sign * take["amount"])
                times.append(r.time_us)
    if not seqs:
        return
    # Every lot a posting names is in ledger_lot (the ledger refuses any other), written
    # earlier in this transaction if the batch opened it.
    conn.execute(
        "INSERT INTO coalition_lot_use SELECT t.seq, t.kind, t.partner, l.origin,"
        " sum(t.points), t.time_us FROM unnest(%b::bigint[], %b::text[], %b::text[],"
        " %b::text[], %b::bigint[], %b::bigint[]) AS t(seq, kind, partner, lot, points, time_us)"
        " JOIN ledger_lot l ON l.chain_id = %s AND l.lot_id = t.lot"
        " GROUP BY t.seq, t.kind, t.partner, l.origin, t.time_us",
        (seqs, kinds, partners, lot_ids, points, times, DEFAULT_CHAIN_ID),
    )


def _partner_onboarded(conn: Conn, meta: dict[str, Any], r: Appended) -> None:
    conn.execute(
        "INSERT INTO coalition_partner VALUES (%s, %s, %s, 'active', %s)",
        (meta["partner"], meta["legal_name"], meta["settlement_currency"], r.seq),
    )


def _partner_status(conn: Conn, meta: dict[str, Any], r: Appended) -> None:
    conn.execute(
        "UPDATE coalition_partner SET status = %s WHERE partner_id = %s",
        (meta["status"], meta["partner"]),
    )


def _versioned(table: str, column: str) -> Handler:
    def handle(conn: Conn, meta: dict[str, Any], r: Appended) -> None:
        conn.execute(
            f"INSERT INTO {table} (partner_id, version, effective_from_us, {column}, seq)"
            " VALUES (%s, %s, %s, %s, %s)",
            (
                meta["partner"],
                meta["version"],
                parse_time_us(meta["effective_from"]),
                Jsonb(meta[column]),
                r.seq,
            ),
        )

    return handle


def _policy(conn: Conn, meta: dict[str, Any], r: Appended) -> None:
    conn.execute(
        "INSERT INTO coalition_policy VALUES (%s, %s, %s) ON CONFLICT (name)"
        " DO UPDATE SET policy = EXCLUDED.policy, seq = EXCLUDED.seq",
        (meta["name"], Jsonb(meta["policy"]), r.seq),
    )


def _member_enrolled(conn: Conn, meta: dict[str, Any], r: Appended) -> None:
    conn.execute("INSERT INTO coalition_member VALUES (%s, 'active', %s)", (meta["member"], r.seq))


def _member_status(conn: Conn, meta: dict[str, Any], r: Appended) -> None:
    conn.execute(
        "UPDATE coalition_member SET status = %s WHERE member_id = %s",
        (meta["status"], meta["member"]),
    )


def _member_erased(conn: Conn, meta: dict[str, Any], r: Appended) -> None:
    # The member's secret and card index rows are deleted by the erasing use case in
    # this transaction (coalition.members.erase_member): they are not derived from the
    # journal, so a replay of it cannot bring them back.
    conn.execute(
        "UPDATE coalition_member SET status = 'erased' WHERE member_id = %s", (meta["member"],)
    )


def _earned(conn: Conn, earns: list[tuple[dict[str, Any], Appended]]) -> None:
    conn.execute(
        "INSERT INTO coalition_earn (earn_seq, partner_id, ref_key, member_id, purchase_minor,"
        " currency, points, time_us) SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[],"
        " %b::text[], %b::bigint[], %b::text[], %b::bigint[], %b::bigint[])",
        (
            [r.seq for _, r in earns],
            [m["partner"] for m, _ in earns],
            [m["ref"] for m, _ in earns],
            [m["member"] for m, _ in earns],
            [m.get("purchase_minor", 0) for m, _ in earns],
            [m.get("currency", "") for m, _ in earns],
            [m["points"] for m, _ in earns],
            [r.time_us for _, r in earns],
        ),
    )


def _redeemed(conn: Conn, redemptions: list[tuple[dict[str, Any], Appended]]) -> None:
    conn.execute(
        "INSERT INTO coalition_redemption (redemption_seq, partner_id, ref_key, member_id,"
        " points, time_us) SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[],"
        " %b::text[], %b::bigint[], %b::bigint[])",
        (
            [r.seq for _, r in redemptions],
            [m["partner"] for m, _ in redemptions],
            [m["ref"] for m, _ in redemptions],
            [m["member"] for m, _ in redemptions],
            [m["points"] for m, _ in redemptions],
            [r.time_us for _, r in redemptions],
        ),
    )


def _earns_refunded(conn: Conn, refunded: dict[int, tuple[int, int]]) -> None:
    seqs = sorted(refunded)
    conn.execute(
        "UPDATE coalition_earn e SET refunded_minor = e.refunded_minor + r.minor,"
        " clawed_back_points = e.clawed_back_points + r.points"
        " FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[]) AS r(seq, minor, points)"
        " WHERE e.earn_seq = r.seq",
        (seqs, [refunded[s][0] for s in seqs], [refunded[s][1] for s in seqs]),
    )


def _redemptions_refunded(conn: Conn, refunded: dict[int, int]) -> None:
    seqs = sorted(refunded)
    conn.execute(
        "UPDATE coalition_redemption d SET refunded_points = d.refunded_points + r.points"
        " FROM unnest(%b::bigint[], %b::bigint[]) AS r(seq, points)"
        " WHERE d.redemption_seq = r.seq",
        (seqs, [refunded[s] for s in seqs]),
    )


_HANDLERS: dict[str, Handler] = {
    "partner_onboarded": _partner_onboarded,
    "partner_status": _partner_status,
    "partner_terms": _versioned("coalition_terms", "terms"),
    "earning_rules": _versioned("coalition_earning_rules", "rules"),
    "coalition_policy": _policy,
    "member_enrolled": _member_enrolled,
    "member_status": _member_status,
    "member_erased": _member_erased,
}

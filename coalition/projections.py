"""Read models kept beside the journal: run by the journal inside each batch transaction.

Each handler turns one appended entry (its kind and metadata) into rows of the
``coalition_*`` tables, so the read models commit or roll back with the journal and can
be rebuilt by replaying it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ledger.journal import Appended
from ledger.requests import EntryRequest
from ledger.timefmt import parse_time_us

Conn = psycopg.Connection[Any]
Handler = Callable[[Conn, dict[str, Any], Appended], None]


def project(conn: Conn, appended: list[tuple[EntryRequest, Appended]]) -> None:
    moving: list[tuple[EntryRequest, Appended]] = []
    for request, result in appended:
        handler = _HANDLERS.get(request.kind)
        if handler is not None:
            handler(conn, request.meta, result)
        if request.kind in _MOVES_LOTS:
            moving.append((request, result))
    if moving:
        _lot_use(conn, moving)


# Kinds whose member postings take or give back lots, and so move issuers' points.
_MOVES_LOTS = frozenset({"redeem", "capture", "expire", "refund_earn", "refund_redemption"})


def _lot_use(conn: Conn, moving: list[tuple[EntryRequest, Appended]]) -> None:
    """Record per issuer (lot origin) how many points each entry took from members: for
    the whole batch, two reads and one insert (a read per entry cost the append path a
    round trip each — the lots are chosen by the ledger, so they are read back)."""
    canonical = {
        int(seq): (bytes(leaf_hash), bytes(body))
        for seq, leaf_hash, body in conn.execute(
            "SELECT seq, leaf_hash, canonical FROM ledger_entry"
            " WHERE seq = ANY(%s) AND leaf_hash = ANY(%s)",
            ([r.seq for _, r in moving], [r.leaf_hash for _, r in moving]),
        ).fetchall()
    }
    taken_by_entry: list[tuple[EntryRequest, Appended, dict[str, int]]] = []
    for request, r in moving:
        leaf_hash, body = canonical[r.seq]
        assert leaf_hash == r.leaf_hash, f"entry {r.seq} is not the one appended"
        taken: dict[str, int] = {}
        for posting in json.loads(body)["postings"]:
            if not posting["account"].startswith("member:") or "lots" not in posting:
                continue
            sign = -1 if posting["amount"] > 0 else 1  # a credit gives points back
            for take in posting["lots"]:
                taken[take["lot"]] = taken.get(take["lot"], 0) + sign * take["amount"]
        if taken:
            taken_by_entry.append((request, r, taken))
    if not taken_by_entry:
        return
    lot_ids = sorted({lot for _, _, taken in taken_by_entry for lot in taken})
    origins = dict(
        conn.execute(
            "SELECT lot_id, origin FROM ledger_lot WHERE lot_id = ANY(%s)", (lot_ids,)
        ).fetchall()
    )
    rows: list[tuple[int, str, str, str, int, int]] = []
    for request, r, taken in taken_by_entry:
        by_origin: dict[str, int] = {}
        for lot_id, points in taken.items():
            by_origin[origins[lot_id]] = by_origin.get(origins[lot_id], 0) + points
        partner = request.meta.get("partner", "coalition")
        for origin, points in sorted(by_origin.items()):
            rows.append((r.seq, request.kind, partner, origin, points, r.time_us))
    columns = list(zip(*rows, strict=True))
    conn.execute(
        "INSERT INTO coalition_lot_use SELECT * FROM unnest(%s::bigint[], %s::text[],"
        " %s::text[], %s::text[], %s::bigint[], %s::bigint[])",
        [list(c) for c in columns],
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


def _earned(conn: Conn, meta: dict[str, Any], r: Appended) -> None:
    conn.execute(
        "INSERT INTO coalition_earn (earn_seq, partner_id, ref_key, member_id, purchase_minor,"
        " currency, points, time_us) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            r.seq,
            meta["partner"],
            meta["ref"],
            meta["member"],
            meta.get("purchase_minor", 0),
            meta.get("currency", ""),
            meta["points"],
            r.time_us,
        ),
    )


def _redeemed(conn: Conn, meta: dict[str, Any], r: Appended) -> None:
    conn.execute(
        "INSERT INTO coalition_redemption (redemption_seq, partner_id, ref_key, member_id,"
        " points, time_us) VALUES (%s, %s, %s, %s, %s, %s)",
        (r.seq, meta["partner"], meta["ref"], meta["member"], meta["points"], r.time_us),
    )


def _earn_refunded(conn: Conn, meta: dict[str, Any], r: Appended) -> None:
    conn.execute(
        "UPDATE coalition_earn SET refunded_minor = refunded_minor + %s,"
        " clawed_back_points = clawed_back_points + %s WHERE earn_seq = %s",
        (meta["refund_minor"], meta["points"], meta["earn_seq"]),
    )


def _redemption_refunded(conn: Conn, meta: dict[str, Any], r: Appended) -> None:
    conn.execute(
        "UPDATE coalition_redemption SET refunded_points = refunded_points + %s"
        " WHERE redemption_seq = %s",
        (meta["points"], meta["redemption_seq"]),
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
    "earn": _earned,
    "bonus": _earned,
    "redeem": _redeemed,
    "capture": _redeemed,
    "refund_earn": _earn_refunded,
    "refund_redemption": _redemption_refunded,
}

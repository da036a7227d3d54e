"""Settlement runs and per-partner KPIs for the API: rows as GraphQL types, keyset-paged
by a cursor that is a run's (computed at, run id) — opaque to clients, read back here —
and the partner KPIs a principal may see (a partner key: its own row only)."""

from __future__ import annotations

import base64
import json
from typing import Any

from coalition import partner_kpis as kpis_of
from coalition import reports
from coalition.api.errors import BadInput
from coalition.api.types import PartnerKpis, PartnerRun, SettlementRun
from coalition.api_keys import Principal
from coalition.context import Conn
from coalition.partner_kpis import PartnerKpis as PartnerKpisRow

_RUN_COLUMNS = (
    "SELECT run_id, period, revision, status, start_seq, end_seq, computed_by, approved_by,"
    " run_bytes, computed_at_us FROM coalition_settlement_run"
)


def runs(
    conn: Conn, first: int, position: tuple[int, str] | None = None, older: bool = True
) -> list[SettlementRun]:
    """Newest first, keyset-paged by (computed at, run id): with ``older``, the runs
    after ``position`` in that order; without, the ``first`` runs just before it."""
    args: tuple[object, ...]
    if position is None:
        where, order, args = "", "DESC", (first,)
    else:
        where = f" WHERE (computed_at_us, run_id) {'<' if older else '>'} (%s, %s)"
        order, args = ("DESC" if older else "ASC"), (*position, first)
    rows = conn.execute(
        f"{_RUN_COLUMNS}{where} ORDER BY computed_at_us {order}, run_id {order} LIMIT %s", args
    ).fetchall()
    found = [_run(r) for r in rows]
    return found if order == "DESC" else found[::-1]


def run(conn: Conn, run_id: str) -> SettlementRun | None:
    row = conn.execute(f"{_RUN_COLUMNS} WHERE run_id = %s", (run_id,)).fetchone()
    return None if row is None else _run(row)


def partner_kpis_row(k: PartnerKpisRow) -> PartnerKpis:
    return PartnerKpis(
        partner_id=k.partner_id,
        points_issued=k.points_issued,
        points_redeemed_at=k.points_redeemed_at,
        points_redeemed_of_issuance=k.points_redeemed_of_issuance,
        points_expired=k.points_expired,
        redemption_rate=str(k.redemption_rate),
        breakage_rate=str(k.breakage_rate),
        members_active=k.members_active,
    )


def run_cursor(computed_at_us: int, run_id: str) -> str:
    """A run's place in a newest-first list (query._run_cursor reads it back)."""
    position = {"at": computed_at_us, "run": run_id}
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def _run(r: Any) -> SettlementRun:
    return SettlementRun(
        run_id=r[0],
        period=r[1],
        revision=r[2],
        status=r[3],
        start_seq=r[4],
        end_seq=r[5],
        computed_by=r[6],
        approved_by=r[7],
        run_json=bytes(r[8]).decode(),
        cursor=run_cursor(int(r[9]), r[0]),
    )


def partner_runs(
    conn: Conn, party: str, first: int, after: tuple[int, str] | None = None
) -> list[PartnerRun]:
    """The runs ``party`` has statements in (every party to a run has), newest first."""
    return [
        PartnerRun(
            run_id=r.run_id,
            period=r.period,
            revision=r.revision,
            status=r.status,
            statement_formats=list(r.statement_formats),
            cursor=run_cursor(r.computed_at_us, r.run_id),
        )
        for r in reports.runs_listed(conn, party, first, after)
    ]


def _partner_exists(conn: Conn, partner_id: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM coalition_partner WHERE partner_id = %s", (partner_id,)
    ).fetchone()
    return found is not None


def read_run_cursor(text: str | None) -> tuple[int, str] | None:
    if text is None:
        return None
    try:
        found = json.loads(base64.urlsafe_b64decode(text.encode()))
        at, run_id = found["at"], found["run"]
    except (ValueError, KeyError, TypeError):
        raise BadInput("the cursor is not one this API gave") from None
    if not isinstance(at, int) or not isinstance(run_id, str):
        raise BadInput("the cursor is not one this API gave")
    return at, run_id


def visible_partner_kpis(
    conn: Conn,
    who: Principal,
    period: tuple[int, int],
    first: int,
    after: str | None,
    partner_id: str | None,
) -> list[PartnerKpis]:
    """Readers: the named partner, or a page of partners after ``after``. A partner key:
    its own row, on the one page that holds it, whatever it names."""
    if who.role == "partner":
        own = who.partner_id or ""
        if partner_id not in (None, own) or (after is not None and after >= own):
            return []
        partner_id = own
    if partner_id is not None:
        ids = [partner_id] if _partner_exists(conn, partner_id) else []
        found = kpis_of.partners_kpis(conn, *period, ids)
    else:
        found = kpis_of.partner_kpis(conn, *period, after=after or "", limit=first)
    return [partner_kpis_row(k) for k in found]

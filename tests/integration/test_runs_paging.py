"""Settlement runs keyset-paged (the API's settlementRuns and myRuns reads): three
revisions of a period, one a page, come newest first, each once, forwards and back; a
party's list pages the same way."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from coalition import reports, settle
from coalition.api import convert_runs
from coalition.context import Coalition
from coalition.partners import publish_terms
from ledger.signed_note import Signer
from settlement.terms import PartnerTerms
from tests.integration.test_settlement import co, conn, january, ok, signer

__all__ = ["co", "conn", "signer"]  # the fixtures, used by name


def _three_revisions(co: Coalition, conn: Any, signer: Signer) -> list[str]:
    """r1, then corrections r2 and r3 after dearer back-dated terms; newest first."""
    ids = []
    for rate in (Decimal(95), Decimal(100), Decimal(105)):
        terms = PartnerTerms(Decimal(50), rate, 100, Decimal("0.5"), "monthly", "multilateral")
        ok(publish_terms(co, conn, "airline", terms, 0, f"terms-airline-{rate}"))
        run = ok(january(co, conn, signer, correction=bool(ids)))
        ok(settle.approve(co, conn, run.run_id, "bob"))
        ids.insert(0, run.run_id)
    return ids


def test_runs_page_forwards_and_back(co: Coalition, conn: Any, signer: Signer) -> None:
    ids = _three_revisions(co, conn, signer)
    assert ids == ["2027-01-r3", "2027-01-r2", "2027-01"]
    seen, position = [], None
    while True:
        page = convert_runs.runs(conn, 1, position, older=True)
        if not page:
            break
        seen.append(page[0].run_id)
        position = reports_position(page[0].cursor)
    assert seen == ids
    oldest = convert_runs.runs(
        conn, 1, reports_position(convert_runs.runs(conn, 3)[-1].cursor), False
    )
    assert [r.run_id for r in oldest] == ids[1:2]  # the one just newer, not the newest
    newer = convert_runs.runs(
        conn, 5, reports_position(convert_runs.runs(conn, 3)[-1].cursor), False
    )
    assert [r.run_id for r in newer] == ids[:2]  # still newest first


def test_a_partys_runs_page_the_same_way(co: Coalition, conn: Any, signer: Signer) -> None:
    ids = _three_revisions(co, conn, signer)
    seen, after = [], None
    for _ in range(4):
        page = reports.runs_listed(conn, "grocer", 1, after)
        if not page:
            break
        seen.append(page[0].run_id)
        after = (page[0].computed_at_us, page[0].run_id)
    assert seen == ids
    assert reports.runs_listed(conn, "nobody", 5) == []


def reports_position(cursor: str) -> tuple[int, str]:
    """A run cursor read back as the API reads it."""
    found = convert_runs.read_run_cursor(cursor)
    assert found is not None
    return found

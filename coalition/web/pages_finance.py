"""Finance pages: settlement runs, a run (positions, lines, the issuer × redeemer flow as
a chart, approval by a second key, payment confirmation), statements, the payment file
and KPIs. Every read and write is a GraphQL operation run as the signed-in key."""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from starlette.responses import Response

from coalition.context import Conn
from coalition.settle import timezone
from coalition.web.framework import Ctx, see_other
from coalition.web.gql import PageError
from coalition.web.run_actions import run_actions
from ledger import reads
from ledger.timefmt import format_time_us

RUNS_PAGE = 25
RUNS_PAGE_MAX = 99  # one more is asked for, to know whether a further page exists
RUN_FIELDS = "runId period revision status startSeq endSeq computedBy approvedBy runJson cursor"
RUNS = f"""query($first: Int!, $after: String, $before: String) {{
  settlementRuns(first: $first, after: $after, before: $before) {{ {RUN_FIELDS} }} }}"""
RUN = f"""query($runId: String!) {{ settlementRun(runId: $runId) {{ {RUN_FIELDS}
  warnings {{ code party currency message }} }} }}"""
COMPUTE = """mutation($period: String!, $correction: Boolean!) {
  computeSettlement(period: $period, correction: $correction) { runId } }"""
APPROVE = """mutation($runId: String!) { approveSettlement(runId: $runId) {
  __typename ... on Refusal { code message } } }"""
CONFIRM = """mutation($runId: String!, $e2e: String!) {
  confirmPayment(runId: $runId, endToEndId: $e2e) {
  __typename ... on Refusal { code message } } }"""
STATEMENT = """query($runId: String!, $party: String!, $format: String!) {
  statement(runId: $runId, party: $party, format: $format) { content } }"""
PAYMENT_FILE = """query($runId: String!, $date: String) {
  paymentFile(runId: $runId, executionDate: $date) { __typename
  ... on PaymentFile { messageId content } ... on Refusal { code message } } }"""
NOTICES = {
    "computed": "Run computed. A second finance key approves it.",
    "approved": "Run approved: its positions are posted.",
    "paid": "Payment confirmed.",
}
MEDIA = {"pdf": "application/pdf", "csv": "text/csv; charset=utf-8", "json": "application/json"}


def _with_doc(run: dict[str, Any]) -> dict[str, Any]:
    doc = json.loads(run["runJson"])
    run["doc"] = doc
    run["gross"] = sorted(doc.get("gross_minor", {}).items())
    run["net"] = sorted(doc.get("net_minor", {}).items())
    return run


def _page_size(ctx: Ctx) -> int:
    text = ctx.request.query_params.get("size", "")
    if not text:
        return RUNS_PAGE
    if not text.isdigit() or not 1 <= int(text) <= RUNS_PAGE_MAX:
        raise PageError(400, f"size is a number of runs per page, 1–{RUNS_PAGE_MAX}.")
    return int(text)


async def runs_list(ctx: Ctx) -> Response:
    """A keyset page of runs, newest first: ``after`` a cursor, the older ones; ``before``
    a cursor, the newer ones. One run more than the page is asked for: it says whether
    the list goes on that way (the cursor's own run says it does the other way)."""
    size = _page_size(ctx)
    params = ctx.request.query_params
    after, before = params.get("after") or None, params.get("before") or None
    if after and before:
        raise PageError(400, "A page is after a run or before one, not both.")
    try:
        found = await ctx.gql(RUNS, first=size + 1, after=after, before=before)
    except PageError as exc:
        if exc.status != 400:
            raise
        raise PageError(
            400,
            f"{exc.message[:1].upper()}{exc.message[1:]}: this link was not made by the"
            " console (or was cut short). Start again from the newest runs: Settlement runs.",
        ) from None
    found = found["settlementRuns"]
    more = len(found) > size
    runs = [_with_doc(r) for r in (found[-size:] if before else found[:size])]
    newer = bool(after) or (bool(before) and more)
    older = bool(before) or (not before and more)
    today = datetime.now(ZoneInfo(timezone())).date()
    last = today.replace(day=1) - timedelta(days=1)
    sized = "" if size == RUNS_PAGE else f"&size={size}"
    return ctx.render(
        "runs.html",
        runs=runs,
        newer_href=f"?before={quote(runs[0]['cursor'])}{sized}" if runs and newer else None,
        older_href=f"?after={quote(runs[-1]['cursor'])}{sized}" if runs and older else None,
        paged=bool(after or before),
        default_period=f"{last.year:04d}-{last.month:02d}",
        notice=NOTICES.get(params.get("notice", ""), ""),
    )


async def compute(ctx: Ctx) -> Response:
    form = await ctx.request.form()
    period = str(form.get("period", "")).strip()
    correction = form.get("correction") == "yes"
    done = await ctx.gql(COMPUTE, period=period, correction=correction)
    return see_other(f"/runs/{done['computeSettlement']['runId']}?notice=computed")


def flow_matrix(doc: dict[str, Any]) -> dict[str, Any]:
    """The run's lines summed by issuer (payer) × redeemer (payee), per currency: the
    table and the chart's data (one dataset per redeemer, stacked, major units)."""
    cells: dict[str, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    for line in doc.get("lines", []):
        cells[line["currency"]][line["payer"], line["payee"]] += int(line["amount_minor"])
    by_currency = []
    for currency, amounts in sorted(cells.items()):
        issuers = sorted({a for a, _ in amounts})
        redeemers = sorted({b for _, b in amounts})
        rows = [[amounts.get((i, r), 0) for r in redeemers] for i in issuers]
        chart = {
            "type": "bar",
            "data": {
                "labels": issuers,
                "datasets": [
                    {"label": f"redeemed at {r}", "data": [row[j] / 100 for row in rows]}
                    for j, r in enumerate(redeemers)
                ],
            },
            "options": {"stacked": True, "title": f"Issuer × redeemer, {currency}"},
        }
        by_currency.append(
            {
                "currency": currency,
                "issuers": issuers,
                "redeemers": redeemers,
                "rows": rows,
                "chart": json.dumps(chart),
                "width": max(720, min(1150, 24 * len(issuers))),  # a bar per issuer, legibly
            }
        )
    return {"currencies": by_currency}


async def _run(ctx: Ctx) -> dict[str, Any]:
    run_id = ctx.request.path_params["run_id"]
    found = (await ctx.gql(RUN, runId=run_id))["settlementRun"]
    if found is None:
        raise PageError(404, f"No settlement run {run_id}. Pick one from the runs list.")
    return _with_doc(found)


def confirmed_payments(conn: Conn, run_id: str) -> dict[str, dict[str, Any]]:
    """End-to-end id → the ``settlement_paid`` entry confirming it: seq, who, when (a run
    has one payment per payer and payee pair, so this is bounded by its parties)."""
    rows = conn.execute(
        "SELECT end_to_end_id, confirmed_seq FROM coalition_payment_confirmation WHERE run_id = %s",
        (run_id,),
    ).fetchall()
    stored = {e.seq: e for e in reads.entries(conn, [int(r[1]) for r in rows])}
    return {
        e2e: {
            "seq": seq,
            "time": format_time_us(stored[seq].time_us),
            "by": json.loads(stored[seq].canonical)["meta"]["confirmed_by"],
        }
        for e2e, seq in rows
    }


async def run_page(ctx: Ctx) -> Response:
    run = await _run(ctx)
    confirmed = await ctx.db(confirmed_payments, run["runId"])
    doc = run["doc"]
    tomorrow = datetime.now(ZoneInfo(timezone())).date() + timedelta(days=1)
    return ctx.render(
        "run.html",
        run=run,
        doc=doc,
        confirmed=confirmed,
        warnings=run["warnings"],
        flow=flow_matrix(doc),
        tomorrow=tomorrow.isoformat(),
        actions=run_actions(run, ctx.principal, confirmed, len(doc.get("payments", []))),
        notice=NOTICES.get(ctx.request.query_params.get("notice", ""), ""),
    )


def _refused(outcome: dict[str, Any]) -> None:
    if "code" in outcome:
        raise PageError(409, f"Refused ({outcome['code']}): {outcome['message']}")


async def approve(ctx: Ctx) -> Response:
    run_id = ctx.request.path_params["run_id"]
    _refused((await ctx.gql(APPROVE, runId=run_id))["approveSettlement"])
    return see_other(f"/runs/{run_id}?notice=approved")


async def confirm(ctx: Ctx) -> Response:
    run_id = ctx.request.path_params["run_id"]
    form = await ctx.request.form()
    e2e = str(form.get("end_to_end_id", ""))
    _refused((await ctx.gql(CONFIRM, runId=run_id, e2e=e2e))["confirmPayment"])
    return see_other(f"/runs/{run_id}?notice=paid")


async def statement(ctx: Ctx) -> Response:
    """A party's statement (PDF, CSV, JSON); a partner gets its own only (the resolver
    answers null for another's, so this is the same 404 as a run that does not exist)."""
    params = ctx.request.path_params
    run_id, party, form = params["run_id"], params["party"], params["format"]
    if form not in MEDIA:
        raise PageError(404, "A statement is pdf, csv or json.")
    found = (await ctx.gql(STATEMENT, runId=run_id, party=party, format=form))["statement"]
    if found is None:
        raise PageError(404, f"No statement of {party} in run {run_id}.")
    content = found["content"]
    body = base64.b64decode(content) if form == "pdf" else content.encode()
    name = f"statement-{run_id}-{party}.{form}"
    return Response(
        body,
        media_type=MEDIA[form],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def payment_file(ctx: Ctx) -> Response:
    run_id = ctx.request.path_params["run_id"]
    when = ctx.request.query_params.get("execution_date") or None
    outcome = (await ctx.gql(PAYMENT_FILE, runId=run_id, date=when))["paymentFile"]
    _refused(outcome)
    return Response(
        outcome["content"].encode(),
        media_type="application/xml",
        headers={"Content-Disposition": f'attachment; filename="pain001-{run_id}.xml"'},
    )

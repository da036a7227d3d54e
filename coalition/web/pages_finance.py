"""Finance pages: settlement runs, a run (positions, lines, the issuer × redeemer flow as
a chart, approval by a second key, payment confirmation), statements, the payment file
and KPIs. Every read and write is a GraphQL operation run as the signed-in key."""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from starlette.responses import Response

from coalition.context import Conn
from coalition.settle import timezone
from coalition.web.framework import Ctx, see_other
from coalition.web.gql import PageError

RUNS_MAX = 100
RUNS = """query($first: Int!) { settlementRuns(first: $first) { runId period revision status
  startSeq endSeq computedBy approvedBy runJson } }"""
WARNINGS = """query($first: Int!) { settlementRuns(first: $first) { runId
  warnings { code party currency message } } }"""
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
KPI_DAYS = 7
KPI_FIELDS = "pointsIssued pointsRedeemed pointsExpired redemptionRate breakageRate membersActive"
NOTICES = {
    "computed": "Run computed. A second finance key approves it.",
    "approved": "Run approved: its positions are posted.",
    "paid": "Payment confirmed.",
}
MEDIA = {"pdf": "application/pdf", "csv": "text/csv; charset=utf-8", "json": "application/json"}


async def _runs(ctx: Ctx) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = (await ctx.gql(RUNS, first=RUNS_MAX))["settlementRuns"]
    for run in runs:
        doc = json.loads(run["runJson"])
        run["doc"] = doc
        run["gross"] = sorted(doc.get("gross_minor", {}).items())
        run["net"] = sorted(doc.get("net_minor", {}).items())
    return runs


async def runs_list(ctx: Ctx) -> Response:
    runs = await _runs(ctx)
    today = datetime.now(ZoneInfo(timezone())).date()
    last = today.replace(day=1) - timedelta(days=1)
    return ctx.render(
        "runs.html",
        runs=runs,
        default_period=f"{last.year:04d}-{last.month:02d}",
        notice=NOTICES.get(ctx.request.query_params.get("notice", ""), ""),
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
            }
        )
    return {"currencies": by_currency}


async def _run(ctx: Ctx) -> dict[str, Any]:
    run_id = ctx.request.path_params["run_id"]
    found = [r for r in await _runs(ctx) if r["runId"] == run_id]
    if not found:
        raise PageError(404, f"No settlement run {run_id}. Pick one from the runs list.")
    return found[0]


def confirmed_payments(conn: Conn, run_id: str) -> dict[str, int]:
    """End-to-end id → seq of its ``settlement_paid`` entry (the run's confirmations)."""
    rows = conn.execute(
        "SELECT end_to_end_id, confirmed_seq FROM coalition_payment_confirmation WHERE run_id = %s",
        (run_id,),
    ).fetchall()
    return {r[0]: r[1] for r in rows}


async def run_page(ctx: Ctx) -> Response:
    run = await _run(ctx)
    confirmed = await ctx.db(confirmed_payments, run["runId"])
    warned = (await ctx.gql(WARNINGS, first=RUNS_MAX))["settlementRuns"]
    warnings: list[dict[str, Any]] = next(
        (r["warnings"] for r in warned if r["runId"] == run["runId"]), []
    )
    doc = run["doc"]
    parties = sorted({p["party"] for p in doc.get("positions", [])})
    tomorrow = datetime.now(ZoneInfo(timezone())).date() + timedelta(days=1)
    return ctx.render(
        "run.html",
        run=run,
        doc=doc,
        confirmed=confirmed,
        parties=parties,
        warnings=warnings,
        flow=flow_matrix(doc),
        tomorrow=tomorrow.isoformat(),
        may_approve=run["status"] == "computed"
        and run["computedBy"] != f"key:{ctx.principal.key_id}",
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


async def kpis(ctx: Ctx) -> Response:
    """The last days' earned, redeemed and expired points, one aliased field per day (one
    request), and the period's issuer × redeemer flow."""
    today = datetime.now(ZoneInfo(timezone())).date()
    days = [today - timedelta(days=n) for n in range(KPI_DAYS - 1, -1, -1)]
    fields = " ".join(
        f'd{i}: kpis(fromTime: "{d.isoformat()}", toTime: "{(d + timedelta(days=1)).isoformat()}")'
        f" {{ {KPI_FIELDS} }}"
        for i, d in enumerate(days)
    )
    end = (today + timedelta(days=1)).isoformat()
    flow = f'flow: kpis(fromTime: "{days[0].isoformat()}", toTime: "{end}")'
    data = await ctx.gql(
        f"query {{ {fields} {flow} {{ {KPI_FIELDS} flow {{ issuer redeemedAt points }} }} }}"
    )
    series = [data[f"d{i}"] for i in range(len(days))]
    chart = _kpi_chart(days, series)
    return ctx.render(
        "kpis.html", days=days, series=series, total=data["flow"], chart=json.dumps(chart)
    )


def _kpi_chart(days: list[date], series: list[dict[str, Any]]) -> dict[str, Any]:
    def column(name: str) -> list[int]:
        return [int(s[name]) for s in series]

    return {
        "type": "bar",
        "data": {
            "labels": [d.isoformat() for d in days],
            "datasets": [
                {"label": "earned", "data": column("pointsIssued")},
                {"label": "redeemed", "data": column("pointsRedeemed")},
                {"label": "expired", "data": column("pointsExpired")},
            ],
        },
        "options": {"stacked": False, "title": "Points per day"},
    }

"""Partner pages: the partner's own position and statements, its own entries (keyset
paged) with a receipt per entry, and reconciliation uploads. The partner comes from the
session's key, never from the URL; the resolvers refuse another partner's objects."""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import UploadFile
from starlette.responses import Response

from coalition.web.framework import Ctx
from coalition.web.gql import PageError

ENTRIES_PAGE = 50
RUNS_PAGE = 20
POSITION = """query($p: String!, $first: Int!, $after: String) { partner(partnerId: $p) {
  partnerId legalName status settlementCurrency issuedPoints redeemedAtPartnerPoints
  redeemedElsewherePoints expiredPoints outstandingPoints }
  myRuns(first: $first, after: $after) { runId period revision status statementFormats
  cursor } }"""
ENTRIES = """query($first: Int!, $after: String) { journalEntries(first: $first, after: $after) {
  edges { node { seq time kind refKey } } pageInfo { hasNextPage endCursor } } }"""
RECEIPT = """query($seq: Long!) { inclusionProof(seq: $seq) { receipt } }"""
SUBMIT = """mutation($records: String!, $format: String!, $from: String!, $to: String!) {
  submitReconciliation(records: $records, format: $format, fromTime: $from, toTime: $to) {
  reconciliationId matched missingOurs missingTheirs mismatched resultJson } }"""
UPLOAD_BYTES_MAX = 900_000  # under the app's 1 MiB body limit, with the form around it


async def position(ctx: Ctx) -> Response:
    """The partner's position and a keyset page of the runs it has statements in (one
    more is asked for, to know whether older ones follow)."""
    after = ctx.request.query_params.get("runs_after") or None
    data = await ctx.gql(
        POSITION, p=ctx.principal.partner_id or "", first=RUNS_PAGE + 1, after=after
    )
    runs = data["myRuns"]
    return ctx.render(
        "position.html",
        partner=data["partner"],
        runs=runs[:RUNS_PAGE],
        older=runs[RUNS_PAGE - 1]["cursor"] if len(runs) > RUNS_PAGE else None,
        paged=after is not None,
    )


async def entries(ctx: Ctx) -> Response:
    after = ctx.request.query_params.get("after") or None
    page = (await ctx.gql(ENTRIES, first=ENTRIES_PAGE, after=after))["journalEntries"]
    return ctx.render(
        "entries.html",
        entries=[e["node"] for e in page["edges"]],
        next_cursor=page["pageInfo"]["endCursor"] if page["pageInfo"]["hasNextPage"] else None,
        first_page=after is None,
    )


async def receipt(ctx: Ctx) -> Response:
    """A C2SP tlog-proof receipt of one entry (own entries only, for partners)."""
    text = ctx.request.path_params["seq"]
    if not text.isdigit() or len(text) > 18:
        raise PageError(404, "An entry is named by its sequence number.")
    found = (await ctx.gql(RECEIPT, seq=text))["inclusionProof"]
    if found is None:
        raise PageError(
            404,
            f"No receipt for entry {text}: not an entry you may see, or no signed checkpoint"
            " covers it yet (try again after the next checkpoint).",
        )
    return Response(
        found["receipt"].encode(),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="receipt-{text}.txt"'},
    )


async def reconcile_form(ctx: Ctx) -> Response:
    return ctx.render("reconcile.html", result=None, error="")


async def reconcile_upload(ctx: Ctx) -> Response:
    form = await ctx.request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        return ctx.render("reconcile.html", 400, result=None, error="Choose a file to upload.")
    data = await upload.read(UPLOAD_BYTES_MAX + 1)
    if len(data) > UPLOAD_BYTES_MAX:
        error = f"The file is over {UPLOAD_BYTES_MAX:,} bytes: split it by period."
        return ctx.render("reconcile.html", 400, result=None, error=error)
    try:
        records = data.decode("utf-8")
    except UnicodeDecodeError:
        return ctx.render("reconcile.html", 400, result=None, error="The file is not UTF-8 text.")
    try:
        done = (
            await ctx.gql(
                SUBMIT,
                records=records,
                format=str(form.get("format", "csv")),
                **{"from": str(form.get("from", "")), "to": str(form.get("to", ""))},
            )
        )["submitReconciliation"]
    except PageError as exc:
        if exc.status != 400:
            raise
        return ctx.render("reconcile.html", 400, result=None, error=exc.message)
    result: dict[str, Any] = json.loads(done["resultJson"])
    return ctx.render("reconcile.html", result=result, summary=done, error="")

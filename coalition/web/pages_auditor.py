"""Auditor pages: checkpoints with their signature checked against the log's key and the
last online verification of the journal, proof lookup by seq (and the receipt to verify
offline), and the journal export."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import FileResponse, Response

from coalition.online_verification import VerifyPolicy, last_verification
from coalition.web.framework import Ctx
from coalition.web.gql import PageError
from ledger import reads
from ledger.export import export_journal
from ledger.signed_note import NoteError, open_note
from ledger.timefmt import format_time_us

CHECKPOINTS_PAGE = 50
CHECKPOINTS = """query($first: Int!, $after: Long!) { checkpoints(first: $first, afterId: $after)
  { checkpointId treeSize rootHashHex signedNote signedAt } }"""
PROOF = """query($seq: Long!) { inclusionProof(seq: $seq) { seq treeSize leafHashHex
  auditPathBase64 checkpoint { checkpointId treeSize rootHashHex } } }"""


def _signature_status(note: str, verifier: Any) -> str:
    try:
        open_note(note.encode(), [verifier])
    except NoteError as exc:
        return f"not verified: {exc}"
    return "verified"


async def checkpoints(ctx: Ctx) -> Response:
    after = ctx.request.query_params.get("after", "0")
    if not after.isdigit():
        raise PageError(400, "after is a checkpoint id.")
    rows = (await ctx.gql(CHECKPOINTS, first=CHECKPOINTS_PAGE, after=after))["checkpoints"]
    verifier = ctx.state["signer"].verifier()
    for row in rows:
        row["signature"] = _signature_status(row["signedNote"], verifier)
    more = len(rows) == CHECKPOINTS_PAGE
    return ctx.render(
        "checkpoints.html",
        rows=rows,
        next_after=rows[-1]["checkpointId"] if more else None,
        verification=await _verification(ctx, rows),
    )


async def _verification(ctx: Ctx, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last online verification, read behind the page's role check (no GraphQL field:
    it is the deployment's own record, not the journal's), with the journal's size now and
    the checkpoint on this page signed at the size it verified, if any, compared."""
    last = await ctx.db(last_verification)
    if last is None:
        return None
    same_size = [r for r in rows if last.ok and int(r["treeSize"]) == last.tree_size]
    checkpoint = None
    if same_size and last.root_hash is not None:
        found = same_size[0]
        checkpoint = {
            "id": found["checkpointId"],
            "agrees": found["rootHashHex"] == last.root_hash.hex(),
        }
    head = await ctx.db(reads.head)
    policy = VerifyPolicy.from_env()
    next_full_us = (last.last_full_at_us or last.run_at_us) + policy.full_every_seconds * 10**6
    return {
        "last": last,
        "run_at": format_time_us(last.run_at_us),
        "full_at": format_time_us(last.last_full_at_us) if last.last_full_at_us else None,
        "next_full_at": format_time_us(next_full_us),
        "root_hex": last.root_hash.hex() if last.root_hash else "",
        "took": _took(last.duration_us),
        "journal_size": head.tree_size,
        "checkpoint": checkpoint,
    }


def _took(duration_us: int) -> str:
    if duration_us < 1_000_000:
        return f"{max(1, duration_us // 1000)} ms"
    return f"{duration_us / 1_000_000:,.1f} s"


async def proof(ctx: Ctx) -> Response:
    text = ctx.request.query_params.get("seq", "").strip()
    found = None
    error = ""
    if text:
        if not text.isdigit() or len(text) > 18:
            error = "A sequence number is a whole number (0, 1, 2 …)."
        else:
            found = (await ctx.gql(PROOF, seq=text))["inclusionProof"]
            if found is None:
                error = f"No proof for entry {text}: no such entry, or no checkpoint covers it yet."
    return ctx.render("proof.html", seq=text, found=found, error=error)


async def export(ctx: Ctx) -> Response:
    """The whole journal as journal.jsonl (the CLI's ``export``), written to a temporary
    file in a worker thread and streamed; the file is removed once sent."""
    fd, name = tempfile.mkstemp(prefix="console-export-", suffix=".jsonl")
    os.close(fd)
    path = Path(name)
    try:
        await ctx.state["database"].job(export_journal, path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return FileResponse(
        path,
        media_type="application/x-ndjson",
        filename="journal.jsonl",
        background=BackgroundTask(path.unlink, missing_ok=True),
    )

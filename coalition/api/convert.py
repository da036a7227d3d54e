"""Reads shaped for the API: each function takes a connection (run by ``Database.run``)
and returns GraphQL types, applying the caller's scope where data belongs to a partner."""

from __future__ import annotations

import base64
import json
from typing import Any

from coalition import reports
from coalition.api.types import (
    ApiKey,
    Checkpoint,
    FlowCell,
    InclusionProof,
    JournalEntry,
    JournalEntryConnection,
    JournalEntryEdge,
    Kpis,
    Member,
    PageInfo,
    PartnerReport,
    PaymentFile,
    Reconciliation,
    Role,
    Statement,
)
from coalition.api_keys import ApiKeyInfo
from coalition.context import Conn
from coalition.partners import get_partner
from ledger import checkpoint_log, proofs, reads
from ledger.checkpoint_log import StoredCheckpoint
from ledger.receipt import format_receipt
from ledger.timefmt import format_time_us


def member(found: reports.MemberBalance, history_first: int, partner_only: str | None) -> Member:
    """The member's balances; its lots and history are read (batched) only if asked for,
    and only the asking partner's own when ``partner_only`` is set."""
    return Member(
        member_id=found.member_id,
        status=found.status,
        balance_points=found.balance_points,
        held_points=found.held_points,
        available_points=found.available_points,
        expired_unswept_points=found.expired_unswept_points,
        debt_points=found.debt_points,
        history_first=history_first,
        partner_only=partner_only,
    )


def partner(conn: Conn, partner_id: str) -> PartnerReport | None:
    found = get_partner(conn, partner_id)
    if found is None:
        return None
    report = reports.partner_report(conn, partner_id)
    return PartnerReport(
        partner_id=partner_id,
        legal_name=found.legal_name,
        status=found.status,
        settlement_currency=found.settlement_currency,
        issued_points=report.issued_points,
        redeemed_at_partner_points=report.redeemed_at_partner_points,
        redeemed_elsewhere_points=report.redeemed_elsewhere_points,
        expired_points=report.expired_points,
        outstanding_points=report.outstanding_points,
    )


def journal_entry(stored: reads.StoredEntry) -> JournalEntry:
    return JournalEntry(
        seq=stored.seq,
        time=format_time_us(stored.time_us),
        kind=stored.kind,
        ref_scope=stored.ref_scope,
        ref_key=stored.ref_key,
        canonical_json=stored.canonical.decode(),
        leaf_hash_hex=stored.leaf_hash.hex(),
    )


def entries(
    conn: Conn, first: int, after_seq: int, kind: str | None, account: str | None, scope: str | None
) -> JournalEntryConnection:
    """Keyset pages by seq: stable while new entries arrive (they only come after)."""
    found = reads.entries_page(
        conn, after_seq, first + 1, kind=kind, ref_scope=scope, account=account
    )
    edges = [JournalEntryEdge(cursor=cursor(e.seq), node=journal_entry(e)) for e in found[:first]]
    return JournalEntryConnection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(found) > first, end_cursor=edges[-1].cursor if edges else None
        ),
    )


def cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"seq": seq}).encode()).decode()


def checkpoint(stored: StoredCheckpoint) -> Checkpoint:
    return Checkpoint(
        checkpoint_id=stored.checkpoint_id,
        tree_size=stored.tree_size,
        root_hash_hex=stored.root_hash.hex(),
        signed_note=stored.signed_note.decode(),
        signed_at=format_time_us(stored.signed_at_us),
    )


def inclusion(
    conn: Conn, seq: int, checkpoint_id: int | None, scope: str | None
) -> InclusionProof | None:
    stored = reads.entry(conn, seq) if seq >= 0 else None
    if stored is None or (scope is not None and stored.ref_scope != scope):
        return None
    if checkpoint_id is None:
        cp = checkpoint_log.covering(conn, seq)
    else:
        found = [
            c
            for c in checkpoint_log.list_checkpoints(conn, after_id=checkpoint_id - 1, limit=1)
            if c.checkpoint_id == checkpoint_id
        ]
        cp = found[0] if found and found[0].tree_size > seq else None
    if cp is None:
        return None
    path = proofs.inclusion_proof(conn, seq, cp.tree_size)
    return InclusionProof(
        seq=seq,
        tree_size=cp.tree_size,
        leaf_hash_hex=stored.leaf_hash.hex(),
        audit_path_base64=[base64.b64encode(h).decode() for h in path],
        checkpoint=checkpoint(cp),
        receipt=format_receipt(seq, path, cp.signed_note, stored.canonical).decode(),
    )


def kpis(k: reports.Kpis) -> Kpis:
    return Kpis(
        partners_active=k.partners_active,
        members_enrolled=k.members_enrolled,
        members_active=k.members_active,
        purchases=k.purchases,
        purchase_frequency=str(k.purchase_frequency),
        points_issued=k.points_issued,
        points_redeemed=k.points_redeemed,
        points_expired=k.points_expired,
        redemption_rate=str(k.redemption_rate),
        breakage_rate=str(k.breakage_rate),
        flow=[FlowCell(issuer=a, redeemed_at=b, points=p) for (a, b), p in k.flow_points.items()],
    )


def statement(conn: Conn, run_id: str, party: str, fmt: str) -> Statement | None:
    from coalition.settle import statement as stored

    content = stored(conn, run_id, party, fmt)
    if content is None:
        return None
    text = base64.b64encode(content).decode() if fmt == "pdf" else content.decode()
    return Statement(run_id=run_id, party=party, format=fmt, content=text)


def payment_file(conn: Conn, run_id: str, execution_date_text: str | None) -> Any:
    """A new pain.001 file for an approved run, or the refusal (as the CLI's verb does):
    the date a real one not in the past (None: tomorrow), the clearing account configured,
    the file valid against the XSD."""
    import xml.etree.ElementTree as ET

    from coalition import settle
    from coalition.banking import ClearingAccountNotConfigured
    from coalition.outcomes import Refusal, RefusalCode
    from coalition.time_input import InvalidTime, execution_date
    from ledger.timefmt import now_us
    from settlement.pain001 import NAMESPACE, InvalidPaymentFile

    now = now_us()
    try:
        day = execution_date(execution_date_text, now, settle.timezone()).isoformat()
    except InvalidTime as exc:
        return Refusal(RefusalCode.INVALID_REQUEST, f"executionDate: {exc}")
    try:
        clearing = settle.clearing_account()
    except ClearingAccountNotConfigured as exc:
        return Refusal(RefusalCode.SETTLEMENT_INPUT_MISSING, str(exc))
    try:
        outcome = settle.payment_file(conn, run_id, clearing, now, day)
    except InvalidPaymentFile as exc:
        return Refusal(RefusalCode.INVALID_REQUEST, str(exc))
    if isinstance(outcome, Refusal):
        return outcome
    document = ET.fromstring(outcome)
    ns = {"p": NAMESPACE}
    return PaymentFile(
        run_id=run_id,
        message_id=document.findtext(".//p:GrpHdr/p:MsgId", namespaces=ns) or "",
        execution_date=day,
        end_to_end_ids=[e.text or "" for e in document.iterfind(".//p:EndToEndId", ns)],
        content=outcome.decode(),
    )


def reconciliations(conn: Conn, partner_id: str, first: int) -> list[Reconciliation]:
    rows = conn.execute(
        "SELECT reconciliation_id, result FROM coalition_reconciliation WHERE partner_id = %s"
        " ORDER BY reconciliation_id DESC LIMIT %s",
        (partner_id, first),
    ).fetchall()
    return [reconciliation(partner_id, rid, result) for rid, result in rows]


def reconciliation(
    partner_id: str, reconciliation_id: int, result: dict[str, Any]
) -> Reconciliation:
    return Reconciliation(
        reconciliation_id=reconciliation_id,
        partner_id=partner_id,
        matched=len(result["matched"]),
        missing_ours=len(result["missing_ours"]),
        missing_theirs=len(result["missing_theirs"]),
        mismatched=len(result["mismatched"]),
        result_json=json.dumps(result, sort_keys=True),
    )


def api_key(info: ApiKeyInfo) -> ApiKey:
    return ApiKey(
        key_id=info.key_id,
        role=Role(info.role),
        partner_id=info.partner_id,
        label=info.label,
        revoked=info.revoked_at_us is not None,
        expires_at=None if info.expires_at_us is None else format_time_us(info.expires_at_us),
    )

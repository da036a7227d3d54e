"""Finance use cases: compute a period's settlement run at a signed checkpoint, approve it
(a second person), confirm its payments, fetch statements and the payment file, and
record the facts settlement needs (bank accounts, exchange rates).

The run itself is ``settlement.compute_run`` over the journal's canonical entries up to
the cut, so it can be recomputed from an export to the same bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from coalition.banking import bic_is_valid, iban_is_valid
from coalition.context import Coalition, Conn, stored_entry
from coalition.outcomes import Recorded, Refusal, RefusalCode
from coalition.partners import OPERATOR_SCOPE, _recorded, get_partner
from ledger import checkpoint_log, reads
from ledger.journal import Appended
from ledger.rejections import Rejection
from ledger.requests import AccountSpec, EntryRequest, PostingRequest
from ledger.signed_note import Signer
from ledger.timefmt import now_us, parse_time_us
from settlement.journal_view import OPERATOR
from settlement.money import InvalidRate, parse_rate
from settlement.obligations import MissingTerms
from settlement.pain001 import Clearing, MissingBankAccount, NothingToPay, pain001
from settlement.pdf import statement_pdf
from settlement.periods import InvalidPeriod, period_bounds
from settlement.reconcile import Record, parse_records, reconcile
from settlement.run import Run, SettlementError, compute_run
from settlement.statement import statement_bytes_csv, statement_bytes_json, statement_json

FINANCE_SCOPE = "finance"
FORMATS = ("json", "csv", "pdf")


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    period: str
    revision: int
    status: str
    start_seq: int
    end_seq: int
    computed_by: str
    approved_by: str | None
    run_bytes: bytes


def timezone() -> str:
    """The coalition's time zone, in which periods begin and end."""
    import os

    return os.environ.get("COALITION_TIMEZONE", "Europe/Moscow")


def get_run(conn: Conn, run_id: str, *, for_update: bool = False) -> RunRecord | None:
    """A run; ``for_update`` locks its row until the caller's transaction ends, so that a
    decision on its status holds while the caller writes (approve, confirm a payment)."""
    row = conn.execute(
        "SELECT run_id, period, revision, status, start_seq, end_seq, computed_by, approved_by,"
        " run_bytes FROM coalition_settlement_run WHERE run_id = %s"
        + (" FOR UPDATE" if for_update else ""),
        (run_id,),
    ).fetchone()
    if row is None:
        return None
    run_id, period, revision, status, start_seq, end_seq, computed_by, approved_by, data = row
    return RunRecord(
        run_id, period, revision, status, start_seq, end_seq, computed_by, approved_by, bytes(data)
    )


def entries_until(conn: Conn, end_seq: int) -> Any:
    return (stored.canonical for stored in reads.iter_entries(conn, 0, end_seq))


def compute(
    co: Coalition,
    conn: Conn,
    signer: Signer,
    *,
    period: str,
    computed_by: str,
    correction: bool = False,
    mode: str | None = None,
    calendar: bool = True,
) -> RunRecord | Refusal:
    """Compute (or recompute, unchanged, while unapproved) the run for ``period``."""
    if not period or len(period) > 40 or not period.replace("-", "").isalnum():
        return Refusal(RefusalCode.INVALID_REQUEST, "period: e.g. 2027-01 or 2027-W05")
    if calendar:  # the demo settles its simulated quarter under a free label
        try:
            _cycle, _start_us, end_us = period_bounds(period, timezone())
        except InvalidPeriod as exc:
            return Refusal(RefusalCode.INVALID_REQUEST, str(exc))
        if co.clock_us() < end_us:
            return Refusal(
                RefusalCode.INVALID_REQUEST, f"period {period} has not ended yet in {timezone()}"
            )
    early = _latest_run(conn, period)
    if early is not None and early[1] == "computed":
        return _recompute(conn, early[0])
    if early is not None and not correction:
        return Refusal(RefusalCode.PERIOD_SETTLED, f"{period} is {early[1]} as {early[0]}")
    # Signed before the period is locked: signing holds appends back for a moment, and
    # must not for as long as a run takes to compute.
    cut = checkpoint_log.sign_now(conn, signer, co.clock_us())
    with conn.transaction():
        # One computation per period at a time; what it decides on is read again under
        # that lock, so two computes at once make one revision, not two or an error.
        _lock_period(conn, period)
        latest = _latest_run(conn, period)
        if latest is not None and latest[1] == "computed":
            return _recompute(conn, latest[0])
        if latest is not None and not correction:
            return Refusal(RefusalCode.PERIOD_SETTLED, f"{period} is {latest[1]} as {latest[0]}")
        return _compute_new(co, conn, period, latest, cut, computed_by, mode)


_PERIOD_LOCK = 727_010  # pg_advisory_xact_lock's first key: settlement periods


def _lock_period(conn: Conn, period: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_PERIOD_LOCK, period))


def _latest_run(conn: Conn, period: str) -> tuple[Any, ...] | None:
    row: tuple[Any, ...] | None = conn.execute(
        "SELECT run_id, status, revision, start_seq FROM coalition_settlement_run"
        " WHERE period = %s ORDER BY revision DESC LIMIT 1",
        (period,),
    ).fetchone()
    return row


def _compute_new(
    co: Coalition,
    conn: Conn,
    period: str,
    latest: tuple[Any, ...] | None,
    cut: Any,
    computed_by: str,
    mode: str | None,
) -> RunRecord | Refusal:
    revision = 1 if latest is None else latest[2] + 1
    if latest is not None:
        start_seq = int(latest[3])
    else:
        row = conn.execute(
            "SELECT coalesce(max(end_seq), 0) FROM coalition_settlement_run"
            " WHERE status <> 'superseded'"
        ).fetchone()
        start_seq = int(row[0]) if row else 0
    run_id = period if revision == 1 else f"{period}-r{revision}"
    try:
        run = _run(conn, run_id, period, start_seq, cut.tree_size, cut.root_hash, mode)
    except (SettlementError, MissingTerms) as exc:
        return Refusal(RefusalCode.SETTLEMENT_INPUT_MISSING, str(exc))
    with conn.transaction():
        conn.execute(
            "INSERT INTO coalition_settlement_run (run_id, period, revision, replaces_run_id,"
            " start_seq, end_seq, checkpoint_id, status, computed_by, computed_at_us,"
            " run_bytes) VALUES (%s, %s, %s, %s, %s, %s, %s, 'computed', %s, %s, %s)",
            (
                run_id,
                period,
                revision,
                latest[0] if latest else None,
                start_seq,
                cut.tree_size,
                cut.checkpoint_id,
                computed_by,
                co.clock_us(),
                run.to_bytes(),
            ),
        )
        for party in parties(run):
            for fmt, content in render_statement(
                run, party, revision, latest[0] if latest else None
            ).items():
                conn.execute(
                    "INSERT INTO coalition_statement VALUES (%s, %s, %s, %s)",
                    (run_id, party, fmt, content),
                )
    found = get_run(conn, run_id)
    assert found is not None
    return found


def _run(
    conn: Conn,
    run_id: str,
    period: str,
    start_seq: int,
    end_seq: int,
    root_hash: bytes,
    mode: str | None,
) -> Run:
    checkpoint = {"tree_size": end_seq, "root_hex": root_hash.hex()}
    return compute_run(
        entries_until(conn, end_seq),
        run_id=run_id,
        period=period,
        start_seq=start_seq,
        end_seq=end_seq,
        checkpoint=checkpoint,
        mode=mode,
    )


def _recompute(conn: Conn, run_id: str) -> RunRecord:
    record = get_run(conn, run_id)
    assert record is not None
    from ledger.proofs import root_hash_at

    run = _run(
        conn,
        run_id,
        record.period,
        record.start_seq,
        record.end_seq,
        root_hash_at(conn, record.end_seq),
        _mode_of(record),
    )
    assert run.to_bytes() == record.run_bytes, "the journal changed under a computed run"
    return record


def parties(run: Run) -> list[str]:
    return sorted({p for line in run.lines for p in (line.payer, line.payee)})


def render_statement(run: Run, party: str, revision: int, replaces: str | None) -> dict[str, bytes]:
    statement = statement_json(run, party, revision, replaces)
    return {
        "json": statement_bytes_json(statement),
        "csv": statement_bytes_csv(statement),
        "pdf": statement_pdf(run, statement),
    }


def statement(conn: Conn, run_id: str, party: str, fmt: str) -> bytes | None:
    row = conn.execute(
        "SELECT content FROM coalition_statement WHERE run_id = %s AND party = %s AND format = %s",
        (run_id, party, fmt),
    ).fetchone()
    return None if row is None else bytes(row[0])


def approve(co: Coalition, conn: Conn, run_id: str, approved_by: str) -> Recorded | Refusal:
    # The run's row is locked before its status is judged, in the transaction that writes
    # the approval: of two approvals at once, the second sees the first's outcome.
    with conn.transaction():
        return _approve(co, conn, run_id, approved_by)


def _approve(co: Coalition, conn: Conn, run_id: str, approved_by: str) -> Recorded | Refusal:
    named = get_run(conn, run_id)
    if named is None:
        return Refusal(RefusalCode.UNKNOWN_RUN, f"no run {run_id}")
    # The period first, as compute takes it: an approval and a correction of one period
    # never cross (a run's period never changes, so reading it unlocked is safe).
    _lock_period(conn, named.period)
    record = get_run(conn, run_id, for_update=True)
    assert record is not None, "runs are never deleted"
    if record.status != "computed":
        return Refusal(RefusalCode.RUN_NOT_COMPUTED, f"run {run_id} is {record.status}")
    if approved_by == record.computed_by:
        return Refusal(RefusalCode.SAME_APPROVER, "a second finance user must approve")
    run_json = _json(record.run_bytes)
    requests = [
        EntryRequest(
            "settlement_approved",
            FINANCE_SCOPE,
            f"approve:{run_id}",
            meta={
                "run": run_id,
                "approved_by": approved_by,
                "run_sha256": hashlib.sha256(record.run_bytes).hexdigest(),
            },
        )
    ]
    for position in run_json["positions"]:
        requests.append(_position_entry(run_id, position))
    results = co.journal.append(conn, requests)
    refused = [r for r in results if isinstance(r, Rejection)]
    if refused:
        raise RuntimeError(f"settlement entries refused: {refused[0]}")  # rolls back all
    first = results[0]
    assert isinstance(first, Appended)
    conn.execute(
        "UPDATE coalition_settlement_run SET status = 'approved', approved_by = %s,"
        " approved_seq = %s WHERE run_id = %s",
        (approved_by, first.seq, run_id),
    )
    if record.revision > 1:
        conn.execute(
            "UPDATE coalition_settlement_run SET status = 'superseded' WHERE period = %s"
            " AND revision < %s",
            (record.period, record.revision),
        )
    return Recorded(first.seq)


def settlement_account(party: str, currency: str) -> str:
    return (
        f"coalition:revenue:{currency}"
        if party == OPERATOR
        else f"partner:{party}:settlement:{currency}"
    )


def _position_entry(run_id: str, position: dict[str, Any]) -> EntryRequest:
    """A party's net position, owed to or by the clearing account, in its currency."""
    party, currency, net = position["party"], position["currency"], position["net_minor"]
    account, clearing = settlement_account(party, currency), f"coalition:clearing:{currency}"
    return EntryRequest(
        "settlement_position",
        FINANCE_SCOPE,
        f"position:{run_id}:{party}:{currency}",
        meta={"run": run_id, "party": party},
        open_accounts=(
            AccountSpec(account, currency, overdraft=True),
            AccountSpec(clearing, currency, overdraft=True),
        ),
        postings=(PostingRequest(account, currency, net), PostingRequest(clearing, currency, -net)),
    )


def confirm_payment(
    co: Coalition, conn: Conn, run_id: str, end_to_end_id: str, confirmed_by: str
) -> Recorded | Refusal:
    with conn.transaction():  # the run's row locked while its status is judged and moved
        return _confirm_payment(co, conn, run_id, end_to_end_id, confirmed_by)


def _confirm_payment(
    co: Coalition, conn: Conn, run_id: str, end_to_end_id: str, confirmed_by: str
) -> Recorded | Refusal:
    record = get_run(conn, run_id, for_update=True)
    if record is None:
        return Refusal(RefusalCode.UNKNOWN_RUN, f"no run {run_id}")
    if record.status not in ("approved", "paid"):
        return Refusal(RefusalCode.RUN_NOT_APPROVED, f"run {run_id} is {record.status}")
    payments = {p["end_to_end_id"]: p for p in _json(record.run_bytes)["payments"]}
    payment = payments.get(end_to_end_id)
    if payment is None:
        return Refusal(RefusalCode.UNKNOWN_PAYMENT, f"run {run_id} has no payment {end_to_end_id}")
    currency, amount = payment["currency"], payment["amount_minor"]
    payer, payee = payment["payer"], payment["payee"]
    request = EntryRequest(
        "settlement_paid",
        FINANCE_SCOPE,
        f"paid:{run_id}:{end_to_end_id}",
        meta={"run": run_id, "end_to_end_id": end_to_end_id, "confirmed_by": confirmed_by},
        postings=_payment_postings(payer, payee, currency, amount),
    )
    outcome = co.append(conn, request)
    if isinstance(outcome, Refusal):
        return outcome
    if not outcome.replayed:
        conn.execute(
            "INSERT INTO coalition_payment_confirmation VALUES (%s, %s, %s)",
            (run_id, end_to_end_id, outcome.seq),
        )
    (confirmed,) = conn.execute(
        "SELECT count(*) FROM coalition_payment_confirmation WHERE run_id = %s", (run_id,)
    ).fetchone() or (0,)
    if confirmed == len(payments):
        conn.execute(
            "UPDATE coalition_settlement_run SET status = 'paid' WHERE run_id = %s", (run_id,)
        )
    return Recorded(outcome.seq, outcome.replayed)


def _payment_postings(
    payer: str, payee: str, currency: str, amount: int
) -> tuple[PostingRequest, ...]:
    """Money moved: the payer's position rises toward zero, the payee's falls to it."""
    return (
        PostingRequest(settlement_account(payer, currency), currency, amount),
        PostingRequest(settlement_account(payee, currency), currency, -amount),
    )


def payment_file(
    conn: Conn, run_id: str, clearing: Clearing, created_us: int, execution_date: str
) -> bytes | Refusal:
    record = get_run(conn, run_id)
    if record is None:
        return Refusal(RefusalCode.UNKNOWN_RUN, f"no run {run_id}")
    if record.status not in ("approved", "paid"):
        return Refusal(RefusalCode.RUN_NOT_APPROVED, "payment files are for approved runs")
    from ledger.proofs import root_hash_at

    run = _run(
        conn,
        run_id,
        record.period,
        record.start_seq,
        record.end_seq,
        root_hash_at(conn, record.end_seq),
        None,
    )
    assert run.to_bytes() == record.run_bytes
    try:
        return pain001(run, clearing, created_us, execution_date)
    except (NothingToPay, MissingBankAccount) as exc:
        return Refusal(RefusalCode.SETTLEMENT_INPUT_MISSING, str(exc))


def set_bank_account(
    co: Coalition,
    conn: Conn,
    partner_id: str,
    *,
    iban: str,
    bic: str,
    name: str,
    ref_key: str,
) -> Recorded | Refusal:
    if get_partner(conn, partner_id) is None:
        return Refusal(RefusalCode.UNKNOWN_PARTNER, f"no partner {partner_id}")
    if not iban_is_valid(iban) or not bic_is_valid(bic) or not 0 < len(name) <= 140:
        return Refusal(RefusalCode.INVALID_REQUEST, "a valid IBAN, BIC and account name")
    meta = {"partner": partner_id, "iban": iban, "bic": bic, "name": name}
    return _recorded(
        co.append(conn, EntryRequest("partner_bank_account", OPERATOR_SCOPE, ref_key, meta=meta))
    )


def record_fx_rate(
    co: Coalition,
    conn: Conn,
    *,
    run_id: str,
    base: str,
    quote: str,
    rate: str,
    ref_key: str,
) -> Recorded | Refusal:
    """Record the rate a run converts ``base`` amounts into ``quote`` with (a journal fact)."""
    try:
        value = parse_rate(rate, "rate")
    except InvalidRate as exc:
        return Refusal(RefusalCode.INVALID_REQUEST, str(exc))
    if value == Decimal(0) or base == quote:
        return Refusal(RefusalCode.INVALID_REQUEST, "a positive rate between two currencies")
    meta = {"run": run_id, "base": base, "quote": quote, "rate": rate}
    return _recorded(co.append(conn, EntryRequest("fx_rate", FINANCE_SCOPE, ref_key, meta=meta)))


def rebuild(conn: Conn, record: RunRecord) -> Run:
    """The run object of a stored run (recomputed; the bytes must match what was stored)."""
    from ledger.proofs import root_hash_at

    run = _run(
        conn,
        record.run_id,
        record.period,
        record.start_seq,
        record.end_seq,
        root_hash_at(conn, record.end_seq),
        _mode_of(record),
    )
    assert run.to_bytes() == record.run_bytes, "the journal changed under a stored run"
    return run


def _mode_of(record: RunRecord) -> str:
    mode: str = _json(record.run_bytes)["mode"]
    return mode


def _json(data: bytes) -> dict[str, Any]:
    import json

    parsed: dict[str, Any] = json.loads(data)
    return parsed


def clearing_account() -> Clearing:
    """The coalition's clearing account, from the environment (demo defaults)."""
    import os

    return Clearing(
        name=os.environ.get("COALITION_CLEARING_NAME", "Coalition Clearing"),
        iban=os.environ.get("COALITION_CLEARING_IBAN", "DE89370400440532013000"),
        bic=os.environ.get("COALITION_CLEARING_BIC", "COBADEFFXXX"),
    )


_RECONCILED_KINDS = {
    "earn": "earn",
    "bonus": "bonus",
    "redeem": "redeem",
    "capture": "redeem",
    "refund_earn": "refund",
    "refund_redemption": "refund",
}


def our_records(conn: Conn, partner_id: str, from_us: int, to_us: int) -> list[Record]:
    """The journal's side: the partner's own calls in the window, keyed by its reference."""
    records = []
    for stored in conn.execute(
        "SELECT seq FROM ledger_entry WHERE ref_scope = %s AND time_us >= %s AND time_us < %s"
        " AND kind = ANY(%s) ORDER BY seq",
        (f"partner:{partner_id}", from_us, to_us, list(_RECONCILED_KINDS)),
    ):
        entry = stored_entry(conn, stored[0])
        meta = entry["meta"]
        records.append(
            Record(
                ref=entry["ref"]["key"],
                kind=_RECONCILED_KINDS[entry["kind"]],
                member=str(meta.get("member", "")),
                points=int(meta.get("points", 0)),
                amount_minor=meta.get("purchase_minor", meta.get("refund_minor")),
                time_us=parse_time_us(entry["time"]),
            )
        )
    return records


def submit_reconciliation(
    conn: Conn,
    partner_id: str,
    data: bytes,
    fmt: str,
    from_us: int,
    to_us: int,
    tolerance_us: int,
) -> tuple[int, dict[str, Any]]:
    """Compare, store and return the result (raises InvalidRecords on a bad file)."""
    from psycopg.types.json import Jsonb

    theirs = parse_records(data, fmt)
    result = reconcile(
        our_records(conn, partner_id, from_us, to_us), theirs, tolerance_us
    ).to_json()
    row = conn.execute(
        "INSERT INTO coalition_reconciliation (partner_id, from_us, to_us, submitted_at_us,"
        " result) VALUES (%s, %s, %s, %s, %s) RETURNING reconciliation_id",
        (partner_id, from_us, to_us, now_us(), Jsonb(result)),
    ).fetchone()
    assert row is not None
    return int(row[0]), result

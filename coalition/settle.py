"""Finance use cases: compute a period's settlement run at a signed checkpoint, approve it
(a second person), confirm its payments, fetch statements and the payment file, and
record the facts settlement needs (bank accounts, exchange rates).

The run itself is ``settlement.compute_run`` over the journal's canonical entries up to
the cut, so it can be recomputed from an export to the same bytes (docs/SETTLEMENT.md).
A period's entries are those not settled by an earlier run whose time is before the
period's end in the coalition's time zone; a correction covers the same entries at a
later cut, and its approval posts (and its payments move) only the difference.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from coalition import outbox, payable, standby
from coalition.banking import bank_account_problem
from coalition.context import Coalition, Conn, stored_entry
from coalition.outcomes import Recorded, Refusal, RefusalCode
from coalition.partners import OPERATOR_SCOPE, _recorded, get_partner
from coalition.time_input import parse_instant
from ledger import checkpoint_log, reads
from ledger.journal import DEFAULT_CHAIN_ID, Appended
from ledger.rejections import Rejection
from ledger.requests import AccountSpec, EntryRequest, PostingRequest
from ledger.signed_note import Signer
from ledger.timefmt import now_us, parse_time_us
from ledger.units import is_valid_unit
from settlement.journal_view import OPERATOR
from settlement.money import InvalidRate, parse_rate
from settlement.obligations import MissingTerms
from settlement.pain001 import Clearing, MissingBankAccount, NothingToPay, pain001
from settlement.pdf import statement_pdf
from settlement.periods import InvalidPeriod, period_bounds
from settlement.reconcile import Record, parse_records, reconcile
from settlement.run import (
    PeriodBounds,
    Previous,
    Run,
    SettlementError,
    compute_run,
    compute_run_read,
    previous_from_json,
)
from settlement.statement import (
    StatementFacts,
    read_statement_facts,
    statement_bytes_csv,
    statement_bytes_json,
    statement_facts_from,
    statement_json,
)

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
    approved_seq: int | None = None


def timezone() -> str:
    """The coalition's time zone, in which periods begin and end."""
    import os

    return os.environ.get("COALITION_TIMEZONE", "Europe/Moscow")


def get_run(conn: Conn, run_id: str, *, for_update: bool = False) -> RunRecord | None:
    """A run; ``for_update`` locks its row until the caller's transaction ends, so that a
    decision on its status holds while the caller writes (approve, confirm a payment)."""
    row = conn.execute(
        "SELECT run_id, period, revision, status, start_seq, end_seq, computed_by, approved_by,"
        " run_bytes, approved_seq FROM coalition_settlement_run WHERE run_id = %s"
        + (" FOR UPDATE" if for_update else ""),
        (run_id,),
    ).fetchone()
    if row is None:
        return None
    run_id, period, revision, status, start_seq, end_seq, computed_by, approved_by, data, seq = row
    return RunRecord(
        run_id,
        period,
        revision,
        status,
        start_seq,
        end_seq,
        computed_by,
        approved_by,
        bytes(data),
        None if seq is None else int(seq),
    )


def is_payable(record: RunRecord) -> bool:
    """Approved runs are paid, superseded ones included: a correction pays only the
    difference, so what an earlier revision's payments move stays due."""
    return record.approved_seq is not None and record.status in ("approved", "paid", "superseded")


def entries_until(conn: Conn, end_seq: int) -> Any:
    return (stored.canonical for stored in reads.iter_entries(conn, 0, end_seq))


def terms_entries(conn: Conn, cut_size: int) -> list[bytes]:
    """Every ``partner_terms`` entry before the cut (they price the whole period, so
    settlement reads them before the period's entries)."""
    rows = conn.execute(
        "SELECT canonical FROM ledger_entry WHERE chain_id = %s AND kind = 'partner_terms'"
        " AND seq < %s ORDER BY seq",
        (DEFAULT_CHAIN_ID, cut_size),
    ).fetchall()
    return [bytes(row[0]) for row in rows]


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
    bounds: PeriodBounds | None = None
    if calendar:  # the demo settles its simulated quarter under a free label
        try:
            _cycle, start_us, end_us = period_bounds(period, timezone())
        except InvalidPeriod as exc:
            return Refusal(RefusalCode.INVALID_REQUEST, str(exc))
        if not _period_over(co, end_us):
            return Refusal(
                RefusalCode.INVALID_REQUEST, f"period {period} has not ended yet in {timezone()}"
            )
        bounds = PeriodBounds(start_us, end_us, timezone())
    early = _latest_run(conn, period)
    if early is not None and early[1] == "computed" and not correction:
        return _recompute(conn, early[0])
    if early is not None and early[1] != "computed" and not correction:
        return Refusal(RefusalCode.PERIOD_SETTLED, f"{period} is {early[1]} as {early[0]}")
    # Signed before the period is locked: signing holds appends back for a moment, and
    # must not for as long as a run takes to compute.
    cut = checkpoint_log.sign_now(conn, signer, co.clock_us())
    try:
        with conn.transaction():
            # One computation per period at a time; what it decides on is read again under
            # that lock, so two computes at once make one revision, not two or an error.
            _lock_period(conn, period)
            latest = _latest_run(conn, period)
            revision = None
            if latest is not None and latest[1] == "computed":
                if not correction:
                    return _recompute(conn, latest[0])
                # Not approved yet, so nothing of it is in the journal: withdraw it and
                # compute again at the new cut (facts recorded since, a bank account say,
                # now count), against the approved revision it would have superseded.
                revision = int(latest[2]) + 1
                latest = _withdraw(conn, latest[0])
            elif latest is not None and not correction:
                return Refusal(
                    RefusalCode.PERIOD_SETTLED, f"{period} is {latest[1]} as {latest[0]}"
                )
            outcome = _compute_new(
                co, conn, period, latest, cut, computed_by, mode, bounds, revision=revision
            )
            if isinstance(outcome, Refusal):
                raise _Refused(outcome)  # nothing half-done: the withdrawal is undone too
            return outcome
    except _Refused as refused:
        return refused.refusal


class _Refused(Exception):
    """Rolls a compute's transaction back, carrying the refusal out of it."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.detail)
        self.refusal = refusal


def _withdraw(conn: Conn, run_id: str) -> tuple[Any, ...] | None:
    """Mark a computed run superseded; the approved run it replaced (if any), as
    ``_latest_run`` gives it."""
    row = conn.execute(
        "UPDATE coalition_settlement_run SET status = 'superseded'"
        " WHERE run_id = %s AND status = 'computed' RETURNING replaces_run_id",
        (run_id,),
    ).fetchone()
    assert row is not None, "the period is locked: its computed run cannot change"
    if row[0] is None:
        return None
    replaced: tuple[Any, ...] | None = conn.execute(
        "SELECT run_id, status, revision, start_seq FROM coalition_settlement_run"
        " WHERE run_id = %s",
        (row[0],),
    ).fetchone()
    return replaced


def _period_over(co: Coalition, end_us: int) -> bool:
    """A period may settle once it has ended by the coalition's clock (a seam for tests
    whose server keeps real time)."""
    return co.clock_us() >= end_us


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
    bounds: PeriodBounds | None,
    *,
    revision: int | None = None,  # after a withdrawn revision: the number after it
) -> RunRecord | Refusal:
    if revision is None:
        revision = 1 if latest is None else latest[2] + 1
    previous: Previous | None = None
    superseded: RunRecord | None = None
    if latest is not None:  # a correction: the same entries, facts up to a later cut
        superseded = get_run(conn, latest[0])
        assert superseded is not None and superseded.approved_seq is not None
        previous = previous_from_json(_json(superseded.run_bytes), superseded.approved_seq)
        if bounds is None:
            bounds = _bounds_of(_json(superseded.run_bytes))
    start_seq, end_seq = run_range(conn, superseded, cut.tree_size, bounds)
    if end_seq < start_seq:
        return Refusal(
            RefusalCode.INVALID_REQUEST,
            f"period {period} ends before entry {start_seq}, the first not yet settled",
        )
    run_id = run_id_of(period, revision)
    try:
        run, facts = _run(
            conn,
            run_id,
            period,
            start_seq,
            end_seq,
            cut.tree_size,
            cut.root_hash,
            mode,
            bounds=bounds,
            previous=previous,
            revision=revision,
        )
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
                end_seq,
                cut.checkpoint_id,
                computed_by,
                co.clock_us(),
                run.to_bytes(),
            ),
        )
        for party in parties(run):
            for fmt, content in render_statement(
                run, party, revision, latest[0] if latest else None, facts
            ).items():
                conn.execute(
                    "INSERT INTO coalition_statement VALUES (%s, %s, %s, %s)",
                    (run_id, party, fmt, content),
                )
        kinds = ["settlement_run.computed"] + (["statement.revised"] if latest else [])
        _run_events(conn, run_id, period, revision, parties(run), kinds, co.clock_us())
    found = get_run(conn, run_id)
    assert found is not None
    return found


def run_id_of(period: str, revision: int) -> str:
    return period if revision == 1 else f"{period}-r{revision}"


def run_range(
    conn: Conn,
    superseded: RunRecord | None,
    cut_size: int,
    bounds: PeriodBounds | None,
    *,
    withdrawn: str = "",  # a computed run the new one replaces: as if superseded already
) -> tuple[int, int]:
    """The entries a run settles (start_seq, end_seq): a correction's are the run's it
    supersedes; a first revision's start at the end of the last run not superseded and
    end at the first entry at or after the period's end (docs/SETTLEMENT.md §2)."""
    if superseded is not None:
        return superseded.start_seq, superseded.end_seq
    row = conn.execute(
        "SELECT coalesce(max(end_seq), 0) FROM coalition_settlement_run"
        " WHERE status <> 'superseded' AND run_id <> %s",
        (withdrawn,),
    ).fetchone()
    start_seq = int(row[0]) if row else 0
    return start_seq, _period_end_seq(conn, start_seq, cut_size, bounds)


def _period_end_seq(conn: Conn, start_seq: int, cut_size: int, bounds: PeriodBounds | None) -> int:
    """The first entry from ``start_seq`` on whose time is at or after the period's end
    (it and all after it belong to later periods); the cut when none is, or without
    calendar bounds. Times never go backwards along the chain, so this is one search."""
    if bounds is None:
        return cut_size
    row = conn.execute(
        "SELECT min(seq) FROM ledger_entry WHERE chain_id = %s AND seq < %s AND time_us >= %s",
        (DEFAULT_CHAIN_ID, cut_size, bounds.end_us),
    ).fetchone()
    return cut_size if row is None or row[0] is None else int(row[0])


def _bounds_of(run_json: dict[str, Any]) -> PeriodBounds | None:
    stored = run_json.get("period_bounds")
    if stored is None:
        return None
    return PeriodBounds(
        parse_time_us(stored["start"]), parse_time_us(stored["end"]), stored["timezone"]
    )


def _run(
    conn: Conn,
    run_id: str,
    period: str,
    start_seq: int,
    end_seq: int,
    cut_size: int,
    root_hash: bytes,
    mode: str | None,
    *,
    bounds: PeriodBounds | None = None,
    previous: Previous | None = None,
    revision: int = 1,
) -> tuple[Run, StatementFacts]:
    """The run, and its statements' facts from the same read of the journal."""
    checkpoint = {"tree_size": cut_size, "root_hex": root_hash.hex()}

    def read(journal: Conn) -> tuple[Run, Any, Any]:
        return compute_run_read(
            entries_until(journal, cut_size),
            run_id=run_id,
            period=period,
            start_seq=start_seq,
            end_seq=end_seq,
            cut_size=cut_size,
            checkpoint=checkpoint,
            mode=mode,
            terms_entries=terms_entries(journal, cut_size),
            bounds=bounds,
            previous=previous,
            revision=revision,
        )

    # The journal up to the cut never changes: the standby, once it holds it, reads it.
    run, facts, buckets = standby.read_prefix(conn, cut_size, read, what=f"settlement {run_id}")
    return run, statement_facts_from(buckets, facts.legal_names, _clearing_or_none())


def _recompute(conn: Conn, run_id: str) -> RunRecord:
    record = get_run(conn, run_id)
    assert record is not None
    rebuild(conn, record)
    return record


def parties(run: Run) -> list[str]:
    return sorted({p for line in run.lines for p in (line.payer, line.payee)})


def statement_facts(conn: Conn, run: Run) -> StatementFacts:
    """What statements show beyond the run document: the gross flows each way and the
    legal names (the run's journal prefix read again), and the clearing account when one
    is configured (the payee of a partner paying the coalition)."""
    cut = run.end_seq if run.cut_size < 0 else run.cut_size
    clearing = _clearing_or_none()
    return standby.read_prefix(
        conn,
        cut,
        lambda journal: read_statement_facts(
            entries_until(journal, cut), run, terms_entries(journal, cut), clearing_account=clearing
        ),
        what=f"statements of {run.run_id}",
    )


def _clearing_or_none() -> dict[str, str] | None:
    from coalition.banking import ClearingAccountNotConfigured

    try:
        found = clearing_account()
    except ClearingAccountNotConfigured:
        return None
    return {"iban": found.iban, "bic": found.bic, "name": found.name}


def render_statement(
    run: Run,
    party: str,
    revision: int,
    replaces: str | None,
    facts: StatementFacts | None = None,
) -> dict[str, bytes]:
    statement = statement_json(run, party, facts, revision=revision, previous_run_id=replaces)
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
    # Here, not only in the entry points that ask first (to name the problems): no way
    # into approval passes a run that cannot be paid. Judged on the run's cut, fixed.
    problems = payable.run_problems(conn, run_id) or []
    if problems:
        detail = f"run {run_id} cannot be paid: {payable.describe(problems)}"
        return Refusal(RefusalCode.PARTY_NOT_PAYABLE, detail)
    run_json = _json(record.run_bytes)
    superseded = run_json.get("supersedes")  # runs computed before revisions: absent
    checkpoint = run_json["cut"]["checkpoint"]
    bounds = run_json.get("period_bounds")
    requests = [
        EntryRequest(
            "settlement_approved",
            FINANCE_SCOPE,
            f"approve:{run_id}",
            # Everything needed to recompute the run from an export, with no search.
            meta={
                "run": run_id,
                "approved_by": approved_by,
                "run_sha256": hashlib.sha256(record.run_bytes).hexdigest(),
                "period": record.period,
                "revision": record.revision,
                "mode": run_json["mode"],
                "start_seq": record.start_seq,
                "end_seq": record.end_seq,
                "cut": {"tree_size": checkpoint["tree_size"], "root": checkpoint["root_hex"]},
                "timezone": None if bounds is None else bounds["timezone"],
                "supersedes": None if superseded is None else superseded["run"],
            },
            # A correction names the approval it supersedes (which moved nothing, so
            # FORMAT.md §3a bounds nothing here; the positions post differences).
            corrects_seq=None if superseded is None else superseded["approved_seq"],
        )
    ]
    for change in run_json.get("position_changes", run_json["positions"]):
        requests.append(
            _position_entry(run_id, change, None if superseded is None else superseded["run"])
        )
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
    positions = run_json.get("position_changes", run_json["positions"])
    parties_ = sorted({p["party"] for p in positions})
    _run_events(
        conn,
        run_id,
        record.period,
        record.revision,
        parties_,
        ["settlement_run.approved"],
        first.time_us,
    )
    return Recorded(first.seq)


def settlement_account(party: str, currency: str) -> str:
    return (
        f"coalition:revenue:{currency}"
        if party == OPERATOR
        else f"partner:{party}:settlement:{currency}"
    )


def _position_entry(
    run_id: str, position: dict[str, Any], supersedes: str | None = None
) -> EntryRequest:
    """A party's net position (for a correction: its change), owed to or by the clearing
    account, in its currency."""
    party, currency, net = position["party"], position["currency"], position["net_minor"]
    account, clearing = settlement_account(party, currency), f"coalition:clearing:{currency}"
    meta: dict[str, Any] = {"run": run_id, "party": party}
    if supersedes is not None:
        meta["supersedes"] = supersedes
    return EntryRequest(
        "settlement_position",
        FINANCE_SCOPE,
        f"position:{run_id}:{party}:{currency}",
        meta=meta,
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


def _confirmed_earlier(
    conn: Conn, run_id: str, end_to_end_id: str, confirmed_by: str
) -> Recorded | Refusal | None:
    """A payment confirmed before: the same person's retry is answered as the original
    (even once the run is paid); anyone else is told who confirmed it, and in which entry
    (a finance team's second confirmation is a mistake to show, not a reference clash)."""
    row = conn.execute(
        "SELECT confirmed_seq FROM coalition_payment_confirmation"
        " WHERE run_id = %s AND end_to_end_id = %s",
        (run_id, end_to_end_id),
    ).fetchone()
    if row is None:
        return None
    seq = int(row[0])
    by = stored_entry(conn, seq)["meta"]["confirmed_by"]
    if by == confirmed_by:
        return Recorded(seq, True)
    return Refusal(
        RefusalCode.PAYMENT_ALREADY_CONFIRMED,
        f"payment {end_to_end_id} of run {run_id} was confirmed by {by} in entry {seq}",
    )


def _confirm_payment(
    co: Coalition, conn: Conn, run_id: str, end_to_end_id: str, confirmed_by: str
) -> Recorded | Refusal:
    record = get_run(conn, run_id, for_update=True)
    if record is None:
        return Refusal(RefusalCode.UNKNOWN_RUN, f"no run {run_id}")
    payments = {p["end_to_end_id"]: p for p in _json(record.run_bytes)["payments"]}
    payment = payments.get(end_to_end_id)
    if payment is None:
        return Refusal(RefusalCode.UNKNOWN_PAYMENT, f"run {run_id} has no payment {end_to_end_id}")
    earlier = _confirmed_earlier(conn, run_id, end_to_end_id, confirmed_by)
    if earlier is not None:  # judged under the run's row lock: a second person waits here
        return earlier
    if not is_payable(record):
        return Refusal(RefusalCode.RUN_NOT_APPROVED, f"run {run_id} is {record.status}")
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
    if confirmed == len(payments):  # a superseded run stays superseded, paid or not
        moved = conn.execute(
            "UPDATE coalition_settlement_run SET status = 'paid' WHERE run_id = %s"
            " AND status = 'approved' RETURNING run_id",
            (run_id,),
        ).fetchone()
        if moved is not None:  # in this transaction: announced once, when it happens
            parties_ = sorted(
                {who for pay in payments.values() for who in (pay["payer"], pay["payee"])}
            )
            _run_events(
                conn,
                run_id,
                record.period,
                record.revision,
                parties_,
                ["settlement_run.paid"],
                outcome.time_us,
            )
    return Recorded(outcome.seq, outcome.replayed)


def _run_events(
    conn: Conn,
    run_id: str,
    period: str,
    revision: int,
    parties_: list[str],
    kinds: list[str],
    at_us: int,
) -> None:
    """Tell each partner of the run (the operator is none) that it moved, in the
    transaction that moved it: the run, never another party's figures."""
    data = {"run": run_id, "period": period, "revision": revision}
    outbox.record(
        conn,
        [
            outbox.Event(party, kind, at_us, data)
            for kind in kinds
            for party in parties_
            if party != OPERATOR
        ],
    )


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
    if not is_payable(record):
        return Refusal(RefusalCode.RUN_NOT_APPROVED, "payment files are for approved runs")
    run = rebuild(conn, record)
    try:
        return pain001(run, clearing, created_us, execution_date, timezone=timezone())
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
    """Record the account a partner is paid to (a journal fact: the latest one counts)."""
    if get_partner(conn, partner_id) is None:
        return Refusal(RefusalCode.UNKNOWN_PARTNER, f"no partner {partner_id}")
    problem = bank_account_problem(iban, bic, name)  # schwifty, electronic form only
    if problem is not None:
        return Refusal(RefusalCode.INVALID_REQUEST, problem)
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
    source: str,
    rate_date: str,
    ref_key: str,
) -> Recorded | Refusal:
    """Record the rate a run converts ``base`` amounts into ``quote`` with (a journal fact):
    1 ``base`` = ``rate`` ``quote``, as published by ``source`` (e.g. ECB) for
    ``rate_date`` (YYYY-MM-DD). A run reads the rates recorded before its cut."""
    try:
        value = parse_rate(rate, "rate")
    except InvalidRate as exc:
        return Refusal(RefusalCode.INVALID_REQUEST, str(exc))
    if value == Decimal(0) or base == quote:
        return Refusal(RefusalCode.INVALID_REQUEST, "a positive rate between two currencies")
    for what, unit in (("base", base), ("quote", quote)):
        if unit == "PTS" or not is_valid_unit(unit):
            return Refusal(RefusalCode.INVALID_REQUEST, f"{what}: an ISO 4217 currency code")
    if not 0 < len(source.strip()) <= 128:
        return Refusal(RefusalCode.INVALID_REQUEST, "source: who published the rate")
    if not _is_date(rate_date):
        return Refusal(RefusalCode.INVALID_REQUEST, "date: the rate's date, YYYY-MM-DD")
    existing = get_run(conn, run_id)
    if existing is not None:  # its cut is taken: a rate recorded now would not be read
        return Refusal(
            RefusalCode.PERIOD_SETTLED,
            f"run {run_id} is {existing.status}: record rates before a run is computed",
        )
    meta = {
        "run": run_id,
        "base": base,
        "quote": quote,
        "rate": rate,
        "source": source,
        "date": rate_date,
    }
    return _recorded(co.append(conn, EntryRequest("fx_rate", FINANCE_SCOPE, ref_key, meta=meta)))


def _is_date(text: str) -> bool:
    import datetime
    import re

    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text, re.ASCII):
        return False
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def rebuild(conn: Conn, record: RunRecord) -> Run:
    """The run object of a stored run (recomputed; the bytes must match what was stored)."""
    from ledger.proofs import root_hash_at

    stored = _json(record.run_bytes)
    cut_size = int(stored["cut"]["checkpoint"]["tree_size"])
    superseded = stored.get("supersedes")
    run, _facts = _run(
        conn,
        record.run_id,
        record.period,
        record.start_seq,
        record.end_seq,
        cut_size,
        root_hash_at(conn, cut_size),
        stored["mode"],
        bounds=_bounds_of(stored),
        previous=None
        if superseded is None
        else previous_from_json(superseded, superseded["approved_seq"]),
        revision=record.revision,
    )
    assert run.to_bytes() == record.run_bytes, "the journal changed under a stored run"
    return run


def _json(data: bytes) -> dict[str, Any]:
    import json

    parsed: dict[str, Any] = json.loads(data)
    return parsed


def clearing_account(*, demo: bool = False) -> Clearing:
    """The coalition's clearing account, from COALITION_CLEARING_NAME, _IBAN and _BIC,
    checked; raises banking.ClearingAccountNotConfigured when it is not configured —
    unless ``demo`` (``coalition demo`` only), which then gets the demo account."""
    import os

    from coalition.banking import clearing_from_env

    return clearing_from_env(os.environ, demo=demo)


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
        "SELECT seq FROM ledger_entry WHERE chain_id = %s AND ref_scope = %s"
        " AND time_us >= %s AND time_us < %s AND kind = ANY(%s) ORDER BY seq",
        (DEFAULT_CHAIN_ID, f"partner:{partner_id}", from_us, to_us, list(_RECONCILED_KINDS)),
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

    theirs = parse_records(data, fmt, parse_instant)  # RFC 3339, as every time input
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


class FromExportError(ValueError):
    """The export cannot settle the run as asked (it does not verify, lacks the cut …)."""


def approvals_in_export(path: str) -> dict[str, tuple[int, dict[str, Any]]]:
    """Each approved run's approval entry (seq, meta), found by a byte search first."""
    import orjson

    found: dict[str, tuple[int, dict[str, Any]]] = {}
    with open(path, "rb") as lines:
        for line in lines:
            if b'"settlement_approved"' not in line:
                continue
            entry = orjson.loads(line)
            if entry["kind"] == "settlement_approved":
                found[entry["meta"]["run"]] = (entry["seq"], entry["meta"])
    return found


def run_from_export(
    path: str,
    run_id: str,
    *,
    period: str | None = None,
    start_seq: int | None = None,
    end_seq: int | None = None,
    cut_size: int | None = None,
    mode: str | None = None,
    supersedes: str | None = None,
) -> Run:
    """Recompute a run from ``journal.jsonl`` alone (docs/SETTLEMENT.md §10). An approved
    run needs only its id: its approval entry records period, entries, cut and mode, and
    the revision it supersedes; the result must hash to the approval's ``run_sha256``.
    A run not approved (yet) is named by period, entries and cut instead."""
    from ledger.verify import verify_export

    approvals = approvals_in_export(path)
    approved = approvals.get(run_id)
    if approved is not None and period is None:
        meta = approved[1]
        params = _params_of(meta)
    else:
        if period is None or start_seq is None or end_seq is None:
            raise FromExportError(f"run {run_id} is not approved in the export: name its entries")
        cut = end_seq if cut_size is None else cut_size
        params = (period, start_seq, end_seq, cut, mode, _calendar_bounds(period), supersedes)
    chain = [params]
    while chain[-1][6] is not None:
        earlier = approvals.get(chain[-1][6])
        if earlier is None:
            raise FromExportError(f"the superseded run {chain[-1][6]} is not approved")
        chain.append(_params_of(earlier[1]))
    sizes = sorted({p[3] for p in chain})
    try:
        verified = verify_export(path, sizes_wanted=sizes)
    except Exception as exc:  # a journal that does not verify is not settled from
        raise FromExportError(f"the export does not verify: {exc}") from exc
    if verified.tree_size < sizes[-1]:
        raise FromExportError(f"the export holds {verified.tree_size} entries, fewer than the cut")

    def full(params: tuple[Any, ...], name: str, previous: Previous | None, revision: int) -> Run:
        label, start, end, cut, run_mode, bounds, _ = params
        with open(path, "rb") as lines:
            return compute_run(
                (line[:-1] for line in lines),
                run_id=name,
                period=label,
                start_seq=start,
                end_seq=end,
                cut_size=cut,
                checkpoint={"tree_size": cut, "root_hex": verified.roots_at[cut].hex()},
                mode=run_mode,
                terms_entries=_terms_lines(path, cut),
                bounds=bounds,
                previous=previous,
                revision=revision,
            )

    previous: Previous | None = None
    if params[6] is not None:
        prev_id = params[6]
        prev_seq, prev_meta = approvals[prev_id]
        prev_params = chain[1]
        # Its full positions and flows do not depend on what it superseded.
        prev_run = full(prev_params, prev_id, None, int(prev_meta.get("revision", 1)))
        previous = Previous(prev_id, prev_seq, dict(prev_run.positions), dict(prev_run.flows))
    revision = int(approved[1].get("revision", 1)) if approved else len(chain)
    run = full(params, run_id, previous, revision)
    if approved is not None and period is None:
        recorded = approved[1]
        if recorded.get("cut", {}).get("root") not in (None, verified.roots_at[params[3]].hex()):
            raise FromExportError(f"the root at {params[3]} is not the approval's")
        if hashlib.sha256(run.to_bytes()).hexdigest() != recorded["run_sha256"]:
            raise FromExportError(f"run {run_id} recomputed does not hash to its approval")
    return run


def _params_of(meta: dict[str, Any]) -> tuple[Any, ...]:
    if "cut" not in meta:
        raise FromExportError(f"run {meta['run']}'s approval predates recorded cuts")
    zone = meta.get("timezone")
    bounds = None
    if zone is not None:
        _cycle, start_us, end_us = period_bounds(meta["period"], zone)
        bounds = PeriodBounds(start_us, end_us, zone)
    return (
        meta["period"],
        int(meta["start_seq"]),
        int(meta["end_seq"]),
        int(meta["cut"]["tree_size"]),
        meta["mode"],
        bounds,
        meta.get("supersedes"),
    )


def _calendar_bounds(period: str) -> PeriodBounds | None:
    """A calendar label's bounds in the coalition's time zone; none for a free label."""
    try:
        _cycle, start_us, end_us = period_bounds(period, timezone())
    except InvalidPeriod:
        return None
    return PeriodBounds(start_us, end_us, timezone())


def _terms_lines(path: str, cut_size: int) -> list[bytes]:
    out = []
    with open(path, "rb") as lines:
        for seq, line in enumerate(lines):
            if seq >= cut_size:
                break
            if b'"partner_terms"' in line:
                out.append(line[:-1])
    return out

"""CLI verbs for finance: ``settle`` (compute, approve, paid, statement, pain001,
from-export) and ``reconcile``. Each is a thin call into coalition.settle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg

from coalition import payable
from coalition.cli._common import require_current_schema, write_atomically
from coalition.context import Coalition
from coalition.database import database_url
from coalition.keys import load_signer
from coalition.outcomes import Refusal, RefusalCode
from coalition.reports import runs_listed
from coalition.settings import Settings
from coalition.time_input import INSTANT_HELP, InvalidTime, parse_instant
from ledger.timefmt import format_time_us, now_us

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
_BY_HELP = "a finance principal: the key id of a finance API key not revoked (apikey list)"
EXIT_RECORDS_DIFFER = 3  # reconcile: something missing or mismatched on either side


def add_verbs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("settle", help="settlement runs: compute, approve, paid, statements …")
    verbs = p.add_subparsers(required=True, metavar="ACTION")
    c = verbs.add_parser("compute", help="compute the run for a period at a new signed cut")
    c.add_argument("--period", required=True, help="e.g. 2027-01")
    c.add_argument("--by", required=True, help=_BY_HELP)
    c.add_argument("--correction", action="store_true", help="a new revision of a settled one")
    c.add_argument(
        "--mode",
        choices=("multilateral", "bilateral"),
        help="netting mode (default: the coalition's configured mode)",
    )
    c.set_defaults(handler=compute)
    a = verbs.add_parser("approve", help="approve a computed run (not by who computed it)")
    a.add_argument(
        "--run", required=True, help="the run's id, as 'settle runs' or 'settle compute' prints it"
    )
    a.add_argument("--by", required=True, help=_BY_HELP + "; not the one who computed it")
    a.set_defaults(handler=approve)
    d = verbs.add_parser("paid", help="confirm payments of an approved run")
    d.add_argument("--run", required=True, help="the approved run's id")
    d.add_argument("--payment", help="an EndToEndId; default: every payment of the run")
    d.add_argument("--by", required=True, help=_BY_HELP)
    d.set_defaults(handler=paid)
    s = verbs.add_parser("statement", help="write a party's statement")
    s.add_argument("--run", required=True, help="the run's id")
    s.add_argument(
        "--party", required=True, help="the partner id (or 'coalition') whose statement to write"
    )
    s.add_argument(
        "--format", choices=("json", "csv", "pdf"), default="pdf", help="file format (default pdf)"
    )
    s.add_argument("--out", type=Path, required=True, help="where to write the statement")
    s.set_defaults(handler=statement)
    f = verbs.add_parser("pain001", help="write the ISO 20022 pain.001.001.09 payment file")
    f.add_argument("--run", required=True, help="the approved run's id")
    f.add_argument("--out", type=Path, required=True, help="where to write the pain.001 XML")
    f.add_argument(
        "--execution-date",
        help="YYYY-MM-DD, today or later in the coalition's time zone (default: the next day)",
    )
    f.set_defaults(handler=payment_file)
    e = verbs.add_parser("entries", help="list the journal entries behind one line of a run")
    e.add_argument("--run", required=True, help="the run's id")
    e.add_argument(
        "--line", type=int, required=True, help="the line number, as the statement numbers it"
    )
    e.set_defaults(handler=line_entries)
    x = verbs.add_parser(
        "from-export",
        help="recompute a run from journal.jsonl alone (an approved run: --run is enough)",
    )
    x.add_argument(
        "--export", type=Path, required=True, help="a journal.jsonl exported from the log"
    )
    x.add_argument(
        "--run",
        required=True,
        help="the run to recompute (approved: its approval entry gives period, entries, cut, mode)",
    )
    x.add_argument("--period", help="a run not approved: its period …")
    x.add_argument("--start-seq", type=int, help="… its first entry …")
    x.add_argument("--end-seq", type=int, help="… the entry after its last …")
    x.add_argument("--cut", type=int, help="… and its cut (tree size; default --end-seq)")
    x.add_argument("--supersedes", help="the approved run it corrects, if any")
    x.add_argument(
        "--mode",
        choices=("multilateral", "bilateral"),
        help="a run not approved: its netting mode (default: the coalition's)",
    )
    x.add_argument(
        "--out", type=Path, required=True, help="where to write the recomputed run document"
    )
    x.set_defaults(handler=from_export)
    _add_payable_verbs(verbs)

    r = sub.add_parser(
        "reconcile",
        help="compare a partner's records with the journal",
        description="Exit 0 when every record matched; 3 when any is missing on either side"
        " or differs; 1 when refused; 2 on bad usage.",
    )
    r.add_argument("--partner", required=True, help="the partner whose records these are")
    r.add_argument(
        "--file",
        type=Path,
        required=True,
        help="the partner's records: ref, time, kind, member, points, amount_minor per row",
    )
    r.add_argument("--format", choices=("csv", "json"), required=True, help="the file's format")
    r.add_argument("--from", dest="start", required=True, help=INSTANT_HELP)
    r.add_argument("--to", dest="end", required=True, help=f"{INSTANT_HELP}; exclusive")
    r.add_argument(
        "--tolerance-seconds",
        type=int,
        default=300,
        help="how far apart two times may be and still match (default 300)",
    )
    r.add_argument("--out", type=Path, help="write the full result as JSON here")
    r.set_defaults(handler=reconcile)


def _refused(outcome: object) -> bool:
    if isinstance(outcome, Refusal):
        print(f"refused: {outcome}", file=sys.stderr)
        return True
    return False


def compute(args: argparse.Namespace) -> int:
    from coalition.settle import compute as run_compute

    settings = Settings.from_env()
    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        by = _finance_principal(conn, args.by)
        if by is None:
            return EXIT_USAGE
        outcome = run_compute(
            Coalition(),
            conn,
            load_signer(settings),
            period=args.period,
            computed_by=by,
            correction=args.correction,
            mode=args.mode,
        )
        if isinstance(outcome, Refusal):
            _refused(outcome)
            if outcome.code is RefusalCode.SETTLEMENT_INPUT_MISSING:
                _print_problems(payable.pending_fx_rates(conn, args.period))
            return EXIT_REFUSED
        problems = payable.run_problems(conn, outcome.run_id) or []
    print(
        f"run {outcome.run_id} ({outcome.status}): entries {outcome.start_seq:,}–"
        f"{outcome.end_seq - 1:,}, computed by {outcome.computed_by}"
    )
    _summary(outcome.run_bytes)
    _print_problems(problems)
    return EXIT_OK


def _summary(run_bytes: bytes) -> None:
    import json

    from settlement.money import format_minor

    run = json.loads(run_bytes)
    for currency, gross in run["gross_minor"].items():
        net = run["net_minor"].get(currency, 0)
        print(
            f"  {currency}: gross {format_minor(gross, currency)}, "
            f"paid after netting {format_minor(net, currency)}"
        )
    for position in run["positions"]:
        amount = format_minor(position["net_minor"], position["currency"])
        print(f"  {position['party']:<24} {position['currency']} {amount:>16}")


def approve(args: argparse.Namespace) -> int:
    from coalition.settle import approve as run_approve

    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        by = _finance_principal(conn, args.by)
        if by is None:
            return EXIT_USAGE
        problems = payable.approval_problems(conn, args.run)
        if problems:
            print(f"refused: party_not_payable: run {args.run} cannot be paid", file=sys.stderr)
            _print_problems(problems)
            return EXIT_REFUSED
        outcome = run_approve(Coalition(), conn, args.run, by)
    if _refused(outcome):
        return EXIT_REFUSED
    print(f"run {args.run} approved by {by}; settlement entries posted")
    return EXIT_OK


def paid(args: argparse.Namespace) -> int:
    import json

    from coalition.settle import confirm_payment, get_run

    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        by = _finance_principal(conn, args.by)
        if by is None:
            return EXIT_USAGE
        record = get_run(conn, args.run)
        if record is None:
            print(f"no run {args.run}", file=sys.stderr)
            return EXIT_REFUSED
        ids = (
            [args.payment]
            if args.payment
            else [p["end_to_end_id"] for p in json.loads(record.run_bytes)["payments"]]
        )
        for end_to_end_id in ids:
            if _refused(confirm_payment(Coalition(), conn, args.run, end_to_end_id, by)):
                return EXIT_REFUSED
        status = get_run(conn, args.run)
    print(f"{len(ids)} payment(s) confirmed; run {args.run} is {status.status if status else '?'}")
    return EXIT_OK


def statement(args: argparse.Namespace) -> int:
    from coalition.settle import statement as fetch

    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        content = fetch(conn, args.run, args.party, args.format)
    if content is None:
        print(f"no {args.format} statement for {args.party} in run {args.run}", file=sys.stderr)
        return EXIT_REFUSED
    write_atomically(args.out, content)
    print(f"statement of {args.party} for {args.run} → {args.out}")
    return EXIT_OK


def payment_file(args: argparse.Namespace) -> int:
    import xml.etree.ElementTree as ET

    from coalition.banking import ClearingAccountNotConfigured
    from coalition.settle import clearing_account, timezone
    from coalition.settle import payment_file as build
    from coalition.time_input import execution_date
    from settlement.pain001 import NAMESPACE, InvalidPaymentFile

    now = now_us()
    try:
        day = execution_date(args.execution_date, now, timezone()).isoformat()
    except InvalidTime as exc:
        print(f"--execution-date: {exc} (leave it out for the next day)", file=sys.stderr)
        return EXIT_USAGE
    try:
        clearing = clearing_account()
    except ClearingAccountNotConfigured as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        try:
            outcome = build(conn, args.run, clearing, now, day)
        except InvalidPaymentFile as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return EXIT_REFUSED
    if _refused(outcome):
        return EXIT_REFUSED
    assert isinstance(outcome, bytes)
    write_atomically(args.out, outcome)
    message_id = ET.fromstring(outcome).findtext(f".//{{{NAMESPACE}}}MsgId")
    print(f"pain.001.001.09 for {args.run} (MsgId {message_id}, execution {day}) → {args.out}")
    return EXIT_OK


def from_export(args: argparse.Namespace) -> int:
    from coalition.settle import FromExportError, run_from_export
    from settlement.obligations import MissingTerms
    from settlement.run import SettlementError

    try:
        run = run_from_export(
            str(args.export),
            args.run,
            period=args.period,
            start_seq=args.start_seq,
            end_seq=args.end_seq,
            cut_size=args.cut,
            mode=args.mode,
            supersedes=args.supersedes,
        )
    except (FromExportError, SettlementError, MissingTerms) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    write_atomically(args.out, run.to_bytes())
    print(f"run {args.run} recomputed from {args.export} → {args.out}")
    return EXIT_OK


def reconcile(args: argparse.Namespace) -> int:
    import json

    from coalition.settle import submit_reconciliation
    from settlement.reconcile import InvalidRecords

    try:
        start, end = _instant("--from", args.start), _instant("--to", args.end)
        data = args.file.read_bytes()
    except (ValueError, OSError) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        try:
            reconciliation_id, result = submit_reconciliation(
                conn,
                args.partner,
                data,
                args.format,
                start,
                end,
                args.tolerance_seconds * 1_000_000,
            )
        except InvalidRecords as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return EXIT_REFUSED
    print(
        f"reconciliation {reconciliation_id} for {args.partner}, "
        f"{format_time_us(start)} to {format_time_us(end)}: "
        f"{len(result['matched'])} matched, {len(result['missing_ours'])} missing on our "
        f"side, {len(result['missing_theirs'])} missing on theirs, "
        f"{len(result['mismatched'])} mismatched fields"
    )
    for side, label in (("missing_ours", "only in theirs"), ("missing_theirs", "only in ours")):
        for ref in result[side][:20]:
            print(f"  {ref}: {label}")
    for mismatch in result["mismatched"][:20]:
        print(
            f"  {mismatch['ref']}: {mismatch['field']} ours={mismatch['ours']} "
            f"theirs={mismatch['theirs']}"
        )
    if args.out:
        write_atomically(args.out, json.dumps(result, indent=2, sort_keys=True).encode() + b"\n")
    differ = result["missing_ours"] or result["missing_theirs"] or result["mismatched"]
    return EXIT_RECORDS_DIFFER if differ else EXIT_OK


def _instant(option: str, text: str) -> int:
    try:
        return parse_instant(text)
    except InvalidTime as exc:
        raise ValueError(f"{option}: {exc}") from None


def line_entries(args: argparse.Namespace) -> int:
    """Answer "why do we owe this": the entries behind a line, each a journal entry."""
    from coalition.settle import entries_until, get_run, rebuild
    from settlement.run import entries_behind

    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        record = get_run(conn, args.run)
        if record is None:
            print(f"no run {args.run}", file=sys.stderr)
            return EXIT_REFUSED
        run = rebuild(conn, record)
        if not 0 <= args.line < len(run.lines):
            print(f"run {args.run} has lines 0–{len(run.lines) - 1}", file=sys.stderr)
            return EXIT_USAGE
        for seq in entries_behind(entries_until(conn, record.end_seq), run, args.line):
            print(seq)
    return EXIT_OK


# --- making partners payable, finance principals, runs by party ----------------------


def _add_payable_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fx = verbs.add_parser(
        "fx-rate", help="record the rate a run converts with (before the run is computed)"
    )
    fx.add_argument("--run", required=True, help="the run id, e.g. 2027-01 (or 2027-01-r2)")
    fx.add_argument("--base", required=True, help="the currency converted from, e.g. RUB")
    fx.add_argument("--quote", required=True, help="the currency converted into, e.g. EUR")
    fx.add_argument("--rate", required=True, help="1 base = RATE quote, e.g. 0.0105")
    fx.add_argument("--source", required=True, help="who published it, e.g. ECB")
    fx.add_argument("--date", required=True, help="the rate's date, YYYY-MM-DD")
    fx.add_argument("--reference", required=True, help="yours, for idempotency")
    fx.set_defaults(handler=fx_rate)
    r = verbs.add_parser("runs", help="list settlement runs (with --party, that party's only)")
    r.add_argument("--party", help="a partner id: only the runs it is a party to")
    r.add_argument(
        "--limit", type=int, default=50, help="at most this many runs, newest first (default 50)"
    )
    r.set_defaults(handler=runs)


def add_partner_verbs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("partner", help="partner facts settlement depends on")
    verbs = p.add_subparsers(required=True, metavar="ACTION")
    b = verbs.add_parser(
        "bank-account", help="record the account a partner is paid to (the latest counts)"
    )
    b.add_argument("--partner", required=True, help="the partner whose account this is")
    b.add_argument("--legal-name", required=True, help="the account holder, as the bank has it")
    b.add_argument("--iban", required=True, help="electronic form: capitals, no spaces")
    b.add_argument("--bic", required=True, help="8 or 11 characters")
    b.add_argument("--reference", required=True, help="yours, for idempotency")
    b.set_defaults(handler=bank_account)


def _finance_principal(conn: psycopg.Connection[object], by: str) -> str | None:
    """``key:<id>`` when ``by`` names a finance API key that is not revoked (as ``<id>``
    or ``key:<id>``), the identity the API records for that key; else None, said why."""
    from coalition.api_keys import list_keys

    key_id = by.removeprefix("key:")
    for info in list_keys(conn):
        if info.key_id == key_id and info.role == "finance" and info.revoked_at_us is None:
            return f"key:{key_id}"
    print(
        f"--by {by}: not a registered finance principal; name the key id of a finance API"
        " key that is not revoked (coalition apikey list)",
        file=sys.stderr,
    )
    return None


def _print_problems(problems: list[payable.Problem]) -> None:
    for problem in problems:
        print(f"  {problem.code}: {problem}", file=sys.stderr)


def fx_rate(args: argparse.Namespace) -> int:
    from coalition.settle import record_fx_rate

    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        outcome = record_fx_rate(
            Coalition(),
            conn,
            run_id=args.run,
            base=args.base,
            quote=args.quote,
            rate=args.rate,
            source=args.source,
            rate_date=args.date,
            ref_key=args.reference,
        )
    if _refused(outcome):
        return EXIT_REFUSED
    print(f"run {args.run}: 1 {args.base} = {args.rate} {args.quote} ({args.source}, {args.date})")
    return EXIT_OK


def bank_account(args: argparse.Namespace) -> int:
    from coalition.settle import set_bank_account

    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        outcome = set_bank_account(
            Coalition(),
            conn,
            args.partner,
            iban=args.iban,
            bic=args.bic,
            name=args.legal_name,
            ref_key=args.reference,
        )
    if _refused(outcome):
        return EXIT_REFUSED
    print(f"{args.partner} is paid to {args.iban} ({args.bic}), {args.legal_name}")
    return EXIT_OK


def runs(args: argparse.Namespace) -> int:
    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        rows = runs_listed(conn, args.party, args.limit)
    for r in rows:
        approved = f", approved by {r.approved_by}" if r.approved_by else ""
        head = f"{r.run_id}\t{r.period}\tr{r.revision}\t{r.status}"
        print(f"{head}\tcomputed by {r.computed_by}{approved}")
    if not rows:
        print("no runs" + (f" with {args.party} as a party" if args.party else ""), file=sys.stderr)
    return EXIT_OK

"""CLI verbs for running the coalition: the expiry job, the KPI report, member erasure."""

from __future__ import annotations

import argparse
import sys

import psycopg

from coalition._progress import Progress
from coalition.cli._common import require_current_schema
from coalition.context import Coalition
from coalition.database import database_url
from coalition.time_input import parse_instant
from ledger.timefmt import format_time_us, now_us

DAY_US = 86_400_000_000


def add_verbs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("expire", help="move points past their expiry to breakage")
    p.add_argument("--as-of", help="RFC 3339 or a date; default now; never in the future")
    p.set_defaults(handler=expire)

    p = sub.add_parser("kpis", help="coalition KPIs and the cross-partner flow for a period")
    p.add_argument("--from", dest="start", help="RFC 3339 or a date; default 30 days ago")
    p.add_argument("--to", dest="end", help="RFC 3339 or a date, exclusive; default now")
    p.set_defaults(handler=kpis)

    p = sub.add_parser("member", help="members' personal data")
    verbs = p.add_subparsers(required=True, metavar="ACTION")
    e = verbs.add_parser(
        "erase",
        help="erase a member's personal data (card index, secret); the journal records it",
        description="Deletes the member's card index rows and secret and appends"
        " member_erased (docs/PRIVACY.md). Exit 0 when erased (or already erased under this"
        " reference), 1 when refused (the code is printed), 2 on bad usage.",
    )
    e.add_argument("--member", required=True, help="the coalition member id")
    e.add_argument("--reference", required=True, help="yours (a ticket number), for idempotency")
    e.set_defaults(handler=erase)


def _instant(text: str | None, default_us: int) -> int:
    return default_us if text is None else parse_instant(text)


def expire(args: argparse.Namespace) -> int:
    from coalition.expiry import expire_points

    try:
        as_of = _instant(args.as_of, now_us())
    except ValueError as exc:
        print(f"--as-of: {exc}", file=sys.stderr)
        return 2
    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        try:
            done = expire_points(Coalition(), conn, as_of_us=as_of, progress=Progress("expiry"))
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return 2
    for refusal in done.refused:
        print(f"not expired (will retry): {refusal}", file=sys.stderr)
    issuers = ", ".join(f"{k} {v:,}" for k, v in sorted(done.points_by_issuer.items()))
    print(
        f"expired {done.points:,} points in {done.entries:,} entries as of "
        f"{format_time_us(as_of)}" + (f" ({issuers})" if issuers else "")
    )
    return 0


def kpis(args: argparse.Namespace) -> int:
    from coalition.reports import kpis as compute

    try:
        end = _instant(args.end, now_us())
        start = _instant(args.start, end - 30 * DAY_US)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        k = compute(conn, start, end)
    print(f"period            {format_time_us(start)} → {format_time_us(end)}")
    print(f"partners active   {k.partners_active}")
    print(f"members           {k.members_enrolled:,} enrolled, {k.members_active:,} active")
    print(f"purchases         {k.purchases:,} ({k.purchase_frequency:.2f} per active member)")
    for currency, minor in k.average_purchase_minor.items():
        print(f"average purchase  {minor / 100:,.2f} {currency}")
    print(f"points issued     {k.points_issued:,}")
    print(f"redemption rate   {k.redemption_rate:.2%} ({k.points_redeemed:,} points)")
    print(f"breakage rate     {k.breakage_rate:.2%} ({k.points_expired:,} points)")
    for (issuer, at), points in k.flow_points.items():
        print(f"flow              {issuer} → {at}: {points:,}")
    return 0


def erase(args: argparse.Namespace) -> int:
    from coalition.members import erase_member
    from coalition.outcomes import Refusal

    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        outcome = erase_member(Coalition(), conn, args.member, args.reference)
    if isinstance(outcome, Refusal):
        print(f"refused: {outcome}", file=sys.stderr)
        return 1
    again = " (already, under this reference)" if outcome.replayed else ""
    print(f"member {args.member} erased{again}: entry {outcome.seq}")
    return 0

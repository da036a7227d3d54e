"""``coalition apikey``: create (printed once, stored hashed), list, revoke."""

from __future__ import annotations

import argparse
import sys

import psycopg

from coalition.cli._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, require_current_schema
from coalition.database import database_url
from ledger.timefmt import format_time_us, now_us


def add_verbs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("apikey", help="API keys: create, list, revoke")
    keys = p.add_subparsers(required=True, metavar="ACTION")
    c = keys.add_parser("create", help="create a key (printed once, stored hashed)")
    c.add_argument(
        "--role",
        required=True,
        choices=("partner", "auditor", "finance", "operator", "metrics"),
        help="what the key may do (docs/DESIGN.md §4; metrics: read /metrics, nothing else)",
    )
    c.add_argument("--partner", help="the partner a partner key acts for")
    c.add_argument(
        "--label", required=True, help="who holds it, for the list (e.g. 'till 12, Main St')"
    )
    c.add_argument(
        "--expires",
        help="when the key stops working: an instant with its offset"
        " (2027-06-30T00:00:00Z) or a date (its midnight in COALITION_TIMEZONE)",
    )
    c.set_defaults(handler=apikey_create)
    ls = keys.add_parser("list", help="list keys (never their secrets)")
    ls.set_defaults(handler=apikey_list)
    rv = keys.add_parser("revoke", help="revoke a key; it fails from the next request")
    rv.add_argument("key_id", help="the key's id, as 'apikey list' prints it")
    rv.set_defaults(handler=apikey_revoke)


def apikey_create(args: argparse.Namespace) -> int:
    from coalition.api_keys import create_key
    from coalition.time_input import parse_instant

    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        try:
            expires_us = None if args.expires is None else parse_instant(args.expires)
            key, info = create_key(conn, args.role, args.partner, args.label, now_us(), expires_us)
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_USAGE
    print(key)
    print(
        f"key {info.key_id} ({info.role}{' for ' + info.partner_id if info.partner_id else ''})"
        + ("" if info.expires_at_us is None else f", expires {format_time_us(info.expires_at_us)}")
        + " — store it now: only its hash is kept",
        file=sys.stderr,
    )
    return EXIT_OK


def apikey_list(args: argparse.Namespace) -> int:
    from coalition.api_keys import list_keys

    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        now = now_us()
        for info in list_keys(conn):
            state = info.state(now)
            print(
                f"{info.key_id}  {info.role:<9} {info.partner_id or '-':<20} {state:<8} "
                f"{info.label}"
            )
    return EXIT_OK


def apikey_revoke(args: argparse.Namespace) -> int:
    from coalition.api_keys import revoke_key

    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        done = revoke_key(conn, args.key_id, now_us())
    print(f"key {args.key_id} revoked" if done else f"no active key {args.key_id}")
    return EXIT_OK if done else EXIT_FAILED

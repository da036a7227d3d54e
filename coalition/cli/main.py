"""The coalition command: the ledger's operations, one verb group per module of
coalition.cli. Auditors script against some verbs, so their spelling is a contract
(docs/AUDITING.md): demo, export --out, verify --export, prove, witness. Each verb is a
thin call into the use cases; long jobs show progress on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg

from coalition._progress import Progress
from coalition.cli._common import migrate_and_say
from coalition.database import database_url, read_url, var_dir
from coalition.migrate import upgrade_to_head

EXIT_OK = 0
EXIT_VERIFY_FAILED = 1
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    _refuse_optimised_python()
    parser = _parser()
    args = parser.parse_args(argv)
    return int(args.handler(args))


def _refuse_optimised_python() -> None:
    # The ledger's invariants are asserted; python -O would strip them silently.
    if not __debug__:
        sys.exit("coalition refuses to run under python -O: it would strip its assertions")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coalition", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser(
        "migrate",
        help="bring the database schema up to date (as its owner); no other verb does, "
        "but serve (unless --no-migrate) and demo",
    )
    p.set_defaults(handler=_migrate)

    p = sub.add_parser("demo", help="fill the database with a demo coalition, export, verify")
    p.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="where journal.jsonl and checkpoint.txt go (default var/)",
    )
    p.set_defaults(handler=_demo)

    p = sub.add_parser(
        "export", help="write the journal as journal.jsonl (from DATABASE_REPLICA_URL if set)"
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="the journal.jsonl to write (replaced whole, never half-written)",
    )
    p.set_defaults(handler=_export)

    p = sub.add_parser(
        "verify",
        help="verify the journal offline (--export) or in the database",
        description="Exit 0 when every check holds; 1 with the first failure named; "
        "2 on bad usage or unreadable input.",
    )
    p.add_argument("--export", type=Path, help="a journal.jsonl to verify offline")
    p.add_argument("--checkpoint", type=Path, help="a signed checkpoint the export must match")
    p.add_argument("--vkey", help="the verifier key you pinned (text or @file); never the data's")
    p.add_argument(
        "--old-checkpoint",
        type=Path,
        action="append",
        default=[],
        help="an older checkpoint you kept: the export must extend it (repeatable)",
    )
    p.add_argument("--expect-size", type=int, help="a tree size seen before (truncation check)")
    p.add_argument("--expect-root", help="hex root hash seen before at --expect-size")
    from coalition.cli.verify import add_export_options

    add_export_options(p)
    p.set_defaults(handler=_verify)

    from coalition.cli.apikey import add_verbs as add_apikey_verbs
    from coalition.cli.batch import add_verbs as add_batch_verbs
    from coalition.cli.coalition import add_verbs as add_coalition_verbs
    from coalition.cli.serve import add_verbs as add_serve_verbs
    from coalition.cli.settle import add_partner_verbs
    from coalition.cli.settle import add_verbs as add_settle_verbs
    from coalition.cli.transparency import add_verbs as add_transparency_verbs
    from coalition.cli.webhooks import add_verbs as add_webhook_verbs
    from coalition.cli.worker import add_verbs as add_worker_verbs

    add_transparency_verbs(sub)
    add_serve_verbs(sub)
    add_apikey_verbs(sub)
    add_coalition_verbs(sub)
    add_settle_verbs(sub)
    add_partner_verbs(sub)
    add_webhook_verbs(sub)
    add_worker_verbs(sub)
    add_batch_verbs(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("coalition-ledger")
    except PackageNotFoundError:  # a checkout run without installing it
        return "unknown (not installed)"


def _migrate(args: argparse.Namespace) -> int:
    with database_url() as url:
        before, after = upgrade_to_head(url)
    if before == after:
        print(f"database schema is current ({after})")
    else:
        print(f"database schema migrated from {before or 'empty'} to {after}")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from coalition.demo import demo_and_verify
    from coalition.keys import load_signer
    from coalition.settings import Settings

    out_dir = args.out_dir or var_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    signer = load_signer(Settings.from_env())
    with database_url() as url:
        migrate_and_say(url)
        return demo_and_verify(url, out_dir, signer, print)


def _export(args: argparse.Namespace) -> int:
    from ledger.export import export_journal

    # From the replica if there is one: a long read the tills need not compete with.
    with read_url() as url, psycopg.connect(url, autocommit=True) as conn:
        summary = export_journal(conn, args.out, progress=Progress("export"))
    print(f"exported {summary.tree_size:,} entries to {args.out}")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from coalition.cli.verify import verify

    return verify(args)


if __name__ == "__main__":
    sys.exit(main())

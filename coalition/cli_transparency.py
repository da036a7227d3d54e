"""CLI verbs for transparency: checkpoint, vkey, prove, verify-receipt, key, witness."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import psycopg

from coalition.cli_schema import migrate_and_say, require_current_schema
from coalition.database import database_url
from coalition.keys import load_signer
from coalition.settings import Settings
from ledger import checkpoint_log, proofs, reads
from ledger.receipt import format_receipt
from ledger.signed_note import format_vkey
from ledger.timefmt import now_us

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def add_verbs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("checkpoint", help="sign a checkpoint of the journal as a signed note")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--latest", action="store_true", help="write the latest stored one instead")
    p.set_defaults(handler=checkpoint)

    p = sub.add_parser("vkey", help="print the log's verifier key (signed-note vkey form)")
    p.set_defaults(handler=vkey)

    p = sub.add_parser("prove", help="write a receipt (C2SP tlog-proof@v1) for entry N")
    p.add_argument("--seq", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(handler=prove)

    p = sub.add_parser("verify-receipt", help="check a receipt offline against a pinned key")
    p.add_argument("--receipt", type=Path, required=True)
    p.add_argument("--vkey", required=True, help="the verifier key you pinned (text or @file)")
    p.set_defaults(handler=verify_receipt)

    p = sub.add_parser("witness", help="check the log's new checkpoint extends the one kept")
    p.add_argument("--url", required=True, help="the log server's base URL")
    p.add_argument("--vkey", required=True, help="the verifier key you pinned (text or @file)")
    p.add_argument("--state", type=Path, required=True, help="file holding the last checkpoint")
    p.set_defaults(handler=witness)

    p = sub.add_parser("serve", help="serve the HTTP API (checkpoints, proofs, health)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default: COALITION_WORKERS, else the cores this may use)",
    )
    p.add_argument(
        "--no-seed",
        dest="seed",
        action="store_false",
        help="do not seed a demo coalition into an empty database",
    )
    p.add_argument(
        "--no-migrate",
        dest="migrate",
        action="store_false",
        help="do not migrate at start (the app's role may not): refuse to start unless the "
        "schema is already the code's (run 'coalition migrate' as its owner first)",
    )
    p.set_defaults(handler=serve)

    p = sub.add_parser("apikey", help="API keys: create, list, revoke")
    keys = p.add_subparsers(required=True, metavar="ACTION")
    c = keys.add_parser("create", help="create a key (printed once, stored hashed)")
    c.add_argument("--role", required=True, choices=("partner", "auditor", "finance", "operator"))
    c.add_argument("--partner", help="the partner a partner key acts for")
    c.add_argument("--label", required=True)
    c.set_defaults(handler=apikey_create)
    ls = keys.add_parser("list", help="list keys (never their secrets)")
    ls.set_defaults(handler=apikey_list)
    rv = keys.add_parser("revoke", help="revoke a key; it fails from the next request")
    rv.add_argument("key_id")
    rv.set_defaults(handler=apikey_revoke)

    p = sub.add_parser("key", help="signing keys: generate a new one, or rotate to it")
    key_sub = p.add_subparsers(required=True, metavar="ACTION")
    g = key_sub.add_parser("generate", help="write a new signing key file (mode 0600)")
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--name", default=None, help="key name = log origin (default: settings)")
    g.set_defaults(handler=key_generate)
    r = key_sub.add_parser("rotate", help="record a move to a new key in the journal")
    r.add_argument("--new-key-file", type=Path, required=True)
    r.set_defaults(handler=key_rotate)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def checkpoint(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        if args.latest:
            stored = checkpoint_log.latest(conn)
            if stored is None:
                print("no checkpoint has been signed yet", file=sys.stderr)
                return EXIT_FAILED
        else:
            stored = checkpoint_log.sign_now(conn, load_signer(settings), now_us())
    _write(args.out, stored.signed_note)
    print(f"checkpoint of {stored.tree_size} entries, root {stored.root_hash.hex()} → {args.out}")
    return EXIT_OK


def vkey(args: argparse.Namespace) -> int:
    print(format_vkey(load_signer(Settings.from_env()).verifier()))
    return EXIT_OK


def prove(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        stored_entry = reads.entry(conn, args.seq)
        if stored_entry is None:
            print(f"no entry {args.seq} in the journal", file=sys.stderr)
            return EXIT_FAILED
        covering = checkpoint_log.covering(conn, args.seq)
        if covering is None:
            covering = checkpoint_log.sign_now(conn, load_signer(settings), now_us())
        path = proofs.inclusion_proof(conn, args.seq, covering.tree_size)
    receipt = format_receipt(args.seq, path, covering.signed_note, stored_entry.canonical)
    _write(args.out, receipt)
    print(f"receipt for entry {args.seq} in the tree of {covering.tree_size} → {args.out}")
    return EXIT_OK


def read_vkey(value: str) -> str:
    return Path(value[1:]).read_text().strip() if value.startswith("@") else value.strip()


def verify_receipt(args: argparse.Namespace) -> int:
    from ledger.merkle_verify import ProofError
    from ledger.receipt import ReceiptError
    from ledger.receipt_check import check_receipt
    from ledger.signed_note import NoteError, parse_vkey

    try:
        verifier = parse_vkey(read_vkey(args.vkey))
        checked = check_receipt(args.receipt.read_bytes(), verifier)
    except OSError as exc:
        print(f"cannot read input: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (NoteError, ProofError, ReceiptError) as exc:
        print(f"FAILED {getattr(exc, 'code', 'invalid')}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    cp = checked.checkpoint
    print(f"OK entry {checked.leaf_index} is in the tree of {cp.tree_size} signed by {cp.origin}")
    print(checked.entry_bytes.decode())
    return EXIT_OK


def key_generate(args: argparse.Namespace) -> int:
    from ledger.signing_key import generate_signer_file

    name = args.name or Settings.from_env().log_origin
    print(generate_signer_file(args.out, name))
    return EXIT_OK


def key_rotate(args: argparse.Namespace) -> int:
    from coalition.key_rotation import rotate

    settings = Settings.from_env()
    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        summary = rotate(conn, settings, args.new_key_file)
    print(summary)
    print("now point COALITION_SIGNING_KEY_FILE (or COALITION_SIGNING_KEY) at the new key")
    return EXIT_OK


def witness(args: argparse.Namespace) -> int:
    import urllib.error

    from coalition.witness import HistoryRewritten
    from coalition.witness import witness as run_witness
    from ledger.signed_note import NoteError, parse_vkey

    try:
        verifier = parse_vkey(read_vkey(args.vkey))
        result = run_witness(args.url, verifier, args.state)
    except HistoryRewritten as exc:
        print(f"ALERT history rewritten: {exc}", file=sys.stderr)
        print(f"ALERT the last good checkpoint is kept in {args.state}", file=sys.stderr)
        return EXIT_FAILED
    except NoteError as exc:
        print(f"ALERT checkpoint not signed by the pinned key ({exc.code}): {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, urllib.error.URLError, ValueError) as exc:
        print(f"cannot reach or read the log: {exc}", file=sys.stderr)
        return EXIT_USAGE
    before = "nothing" if result.previous is None else f"{result.previous.tree_size} entries"
    print(f"OK {result.current.tree_size} entries extend the kept checkpoint ({before})")
    return EXIT_OK


def serve(args: argparse.Namespace) -> int:
    from coalition.stopping import Stopped, stop_on_signals

    # SIGTERM and SIGINT unwind through every block below (coalition/stopping.py).
    with stop_on_signals():
        try:
            return _serve(args)
        except Stopped as stop:
            print(f"stopped ({stop})", file=sys.stderr, flush=True)
            return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from coalition.api.observability import configure_logging
    from coalition.app import create_app
    from coalition.checkpointer import Checkpointer
    from coalition.seed import seed_if_empty
    from ledger.checkpoint_log import CheckpointPolicy

    settings = Settings.from_env()
    workers = settings.workers if args.workers is None else args.workers
    if not 1 <= workers <= 256:
        print("--workers: 1–256 processes", file=sys.stderr)
        return EXIT_USAGE
    with database_url() as url:
        # Once per deployment, here in the serving parent, never in a worker: the
        # migrations, the demo seed and the checkpointer (one signer).
        if args.migrate:
            migrate_and_say(url)
        else:
            require_current_schema(url)
        keys = seed_if_empty(url) if args.seed else {}
        checkpointer = Checkpointer(
            url,
            load_signer(settings),
            CheckpointPolicy(settings.checkpoint_entries_max, settings.checkpoint_seconds_max),
        )
        checkpointer.start()
        try:
            base = f"http://{args.host}:{args.port}"
            print(
                f"serving on {base}/graphql with {workers} worker process"
                + ("es" if workers > 1 else "")
                + (" (GraphiQL: open it in a browser)" if settings.development else ""),
                flush=True,
            )
            for role, key in keys.items():
                print(f"  {role:<22} Authorization: Bearer {key}", flush=True)
            if keys:
                print(
                    "  (demo keys: shown once, stored only as hashes; make more with "
                    "'coalition apikey create')",
                    flush=True,
                )
            elif args.seed:
                print(
                    "  the demo coalition was seeded at an earlier start, and its keys shown"
                    " then (only their hashes are kept); make a key with\n"
                    "  .venv/bin/coalition apikey create --role auditor --label me",
                    flush=True,
                )
            configure_logging()
            if workers == 1:
                uvicorn.run(
                    create_app(settings, url),
                    host=args.host,
                    port=args.port,
                    log_level="warning",
                    access_log=False,
                )
            else:
                # Each worker builds its own app (pool, group committer, key cache) from
                # the environment; they share the socket, and the journal's chain-head
                # lock orders their appends. SIGTERM or SIGINT here stops them all.
                os.environ["DATABASE_URL"] = url
                uvicorn.run(
                    "coalition.app:app_from_env",
                    factory=True,
                    workers=workers,
                    host=args.host,
                    port=args.port,
                    log_level="warning",
                    access_log=False,
                )
        finally:
            checkpointer.stop()
    return EXIT_OK


def apikey_create(args: argparse.Namespace) -> int:
    from coalition.api_keys import create_key

    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        try:
            key, info = create_key(conn, args.role, args.partner, args.label, now_us())
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_USAGE
    print(key)
    print(
        f"key {info.key_id} ({info.role}{' for ' + info.partner_id if info.partner_id else ''})"
        " — store it now: only its hash is kept",
        file=sys.stderr,
    )
    return EXIT_OK


def apikey_list(args: argparse.Namespace) -> int:
    from coalition.api_keys import list_keys

    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        for info in list_keys(conn):
            state = "revoked" if info.revoked_at_us is not None else "active"
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

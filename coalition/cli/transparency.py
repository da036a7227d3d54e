"""CLI verbs for transparency: checkpoint, vkey, prove, verify-receipt, witness, key."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg

from coalition.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    read_vkey,
    require_current_schema,
    write_atomically,
)
from coalition.database import database_url
from coalition.keys import load_signer
from coalition.settings import Settings
from ledger import checkpoint_log, proofs, reads
from ledger.receipt import format_receipt
from ledger.signed_note import format_vkey
from ledger.timefmt import now_us


def add_verbs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("checkpoint", help="sign a checkpoint of the journal as a signed note")
    p.add_argument("--out", type=Path, required=True, help="where to write the signed checkpoint")
    p.add_argument("--latest", action="store_true", help="write the latest stored one instead")
    p.set_defaults(handler=checkpoint)

    p = sub.add_parser("vkey", help="print the log's verifier key (signed-note vkey form)")
    p.set_defaults(handler=vkey)

    p = sub.add_parser("prove", help="write a receipt (C2SP tlog-proof@v1) for entry N")
    p.add_argument("--seq", type=int, required=True, help="the entry's sequence number")
    p.add_argument("--out", type=Path, required=True, help="where to write the receipt")
    p.set_defaults(handler=prove)

    p = sub.add_parser("verify-receipt", help="check a receipt offline against a pinned key")
    p.add_argument(
        "--receipt", type=Path, required=True, help="a receipt written by 'coalition prove'"
    )
    p.add_argument("--vkey", required=True, help="the verifier key you pinned (text or @file)")
    p.set_defaults(handler=verify_receipt)

    p = sub.add_parser("witness", help="check the log's new checkpoint extends the one kept")
    p.add_argument("--url", required=True, help="the log server's base URL")
    p.add_argument("--vkey", required=True, help="the verifier key you pinned (text or @file)")
    p.add_argument("--state", type=Path, required=True, help="file holding the last checkpoint")
    p.set_defaults(handler=witness)

    p = sub.add_parser("key", help="signing keys: generate a new one, or rotate to it")
    key_sub = p.add_subparsers(required=True, metavar="ACTION")
    g = key_sub.add_parser("generate", help="write a new signing key file (mode 0600)")
    g.add_argument(
        "--out",
        type=Path,
        required=True,
        help="where to write the key file (created with mode 0600; never overwritten)",
    )
    g.add_argument("--name", default=None, help="key name = log origin (default: settings)")
    g.set_defaults(handler=key_generate)
    r = key_sub.add_parser("rotate", help="record a move to a new key in the journal")
    r.add_argument(
        "--new-key-file",
        type=Path,
        required=True,
        help="the new key file, made by 'coalition key generate'",
    )
    r.set_defaults(handler=key_rotate)


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
    write_atomically(args.out, stored.signed_note)
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
    write_atomically(args.out, receipt)
    print(f"receipt for entry {args.seq} in the tree of {covering.tree_size} → {args.out}")
    return EXIT_OK


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

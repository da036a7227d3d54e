"""``coalition verify``: offline from an export (optionally against signed checkpoints and
a pinned key), or online against the database.

An export is replayed by the lean verifier (``ledger.verify_lean``, in ``--workers``
processes, the cores by default); ``--reference`` replays it with ``ledger.verify``
instead. Both name the same first failure.

Online, the outcome (what was verified, or the first failure) is recorded for the
auditor's checkpoints page, as the scheduler's ``verify`` job records its own
(``coalition.online_verification``).

Exit codes: 0 every check holds; 1 a check failed (the first failure is named with its
seq, check, expected and actual value); 2 bad usage or unreadable input.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import psycopg

from coalition import standby
from coalition._progress import Progress
from coalition.cli._common import read_vkey
from coalition.database import database_url
from coalition.online_verification import record_full
from ledger.checkpoint import Checkpoint, open_checkpoint
from ledger.signed_note import NoteError, parse_vkey
from ledger.timefmt import now_us
from ledger.verify import VerificationFailed, Verified, check_against_known, verify_export
from ledger.verify_db import verify_database
from ledger.verify_lean import verify_export_lean

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_export_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes that verify an export together (default: the cores)",
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="verify the export with the reference replay (ledger.verify), in one process",
    )


def verify(args: argparse.Namespace) -> int:
    if args.workers < 1:
        return _usage("--workers must be at least 1")
    if (args.checkpoint or args.old_checkpoint) and not args.vkey:
        return _usage("--checkpoint and --old-checkpoint need --vkey (the key you pinned)")
    if (args.checkpoint or args.old_checkpoint) and args.export is None:
        return _usage("checkpoints are checked against an export: give --export")
    if args.expect_root and args.expect_size is None:
        return _usage("--expect-root needs --expect-size")
    expected_root = None
    if args.expect_root:
        try:
            expected_root = bytes.fromhex(args.expect_root)
        except ValueError:
            return _usage("--expect-root must be 64 hex digits")
        if len(expected_root) != 32:
            return _usage("--expect-root must be 64 hex digits (a SHA-256 root hash)")
    try:
        checkpoints = _open_checkpoints(args)
    except OSError as exc:
        return _usage(f"cannot read input: {exc}")
    except NoteError as exc:
        if exc.code in ("malformed_key", "invalid_name", "key_id_mismatch", "unknown_algorithm"):
            return _usage(f"bad --vkey ({exc.code}): {exc}")
        print(f"FAILED checkpoint_signature ({exc.code}): {exc}", file=sys.stderr)
        return EXIT_FAILED
    progress = Progress("verify")
    try:
        verified = _run(args, checkpoints, progress)
        for cp in checkpoints:
            check_against_known(verified, cp.tree_size, cp.root_hash)
        if args.expect_size is not None:
            _check_expected(verified, args.expect_size, expected_root)
    except VerificationFailed as failure:
        progress.done()
        print(f"FAILED {failure}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        progress.done()
        return _usage(f"cannot read input: {exc}")
    progress.done()
    print(f"OK {verified.tree_size} entries, root {verified.root_hash.hex()}")
    for cp in checkpoints:
        print(f"OK checkpoint of {cp.tree_size} entries signed by {cp.origin} matches")
    return EXIT_OK


def _usage(message: str) -> int:
    print(message, file=sys.stderr)
    return EXIT_USAGE


def _open_checkpoints(args: argparse.Namespace) -> list[Checkpoint]:
    paths = ([args.checkpoint] if args.checkpoint else []) + list(args.old_checkpoint)
    if not paths:
        return []
    verifier = parse_vkey(read_vkey(args.vkey))
    return [open_checkpoint(path.read_bytes(), verifier) for path in paths]


def _run(args: argparse.Namespace, checkpoints: list[Checkpoint], progress: Progress) -> Verified:
    sizes = {cp.tree_size for cp in checkpoints}
    if args.expect_size is not None:
        sizes.add(args.expect_size)
    if args.export is not None and args.reference:
        return verify_export(str(args.export), progress, sizes)
    if args.export is not None:
        return verify_export_lean(str(args.export), progress, sizes, workers=args.workers)
    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        started_us, started = now_us(), time.monotonic()
        try:
            verified = standby.read_prefix(
                conn,
                standby.chain_tree_size(conn),
                lambda journal: verify_database(journal, progress=progress, sizes_wanted=sizes),
                what="verify",
            )
        except VerificationFailed as failure:
            record_full(conn, started_us, failure, _since(started), by="cli")
            raise
        record_full(conn, started_us, verified, _since(started), by="cli")
        return verified


def _since(started: float) -> int:
    return int((time.monotonic() - started) * 1_000_000)


def _check_expected(verified: Verified, size: int, root: bytes | None) -> None:
    if root is not None:
        check_against_known(verified, size, root)
    elif verified.tree_size < size:
        raise VerificationFailed(
            None, "truncated", f"at least {size} entries", f"{verified.tree_size} entries"
        )

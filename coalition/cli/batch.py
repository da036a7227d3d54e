"""``coalition batch import FILE --partner P``: a partner's batch file (docs/BATCH.md)
through the single calls' use cases, with progress, and the per-line result file.

Exit codes: 0 every line accepted (or replayed); 1 the batch was refused whole (nothing
written), some lines were refused (the result file names them) or the database went away
midway (re-submit: what was written replays); 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg

from coalition._progress import Progress
from coalition.batch_format import FORMATS, Batch, parse_batch, write_results
from coalition.batch_import import import_batch
from coalition.context import Coalition
from coalition.database import database_url
from coalition.outcomes import Refusal

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def add_verbs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("batch", help="partner batch files")
    verbs = p.add_subparsers(required=True, metavar="ACTION")
    i = verbs.add_parser(
        "import",
        help="import a batch file (CSV or JSON Lines, docs/BATCH.md) for a partner",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    i.add_argument("file", type=Path, help="the batch file")
    i.add_argument("--partner", required=True, help="the partner whose batch it is")
    i.add_argument("--format", choices=FORMATS, help="default: from the file's extension")
    i.add_argument("--results", type=Path, help="the result file (default FILE.results.EXT)")
    i.set_defaults(handler=import_file)


def import_file(args: argparse.Namespace) -> int:
    fmt = args.format or {".csv": "csv", ".jsonl": "jsonl"}.get(args.file.suffix)
    if fmt is None:
        return _usage("say --format csv or jsonl (the extension does not tell)")
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        return _usage(f"cannot read {args.file}: {exc.strerror}")
    batch = parse_batch(data, fmt, args.partner)
    if isinstance(batch, Refusal):
        print(f"refused whole, nothing written: {batch}", file=sys.stderr)
        return EXIT_REFUSED
    assert isinstance(batch, Batch)
    out = args.results or args.file.with_name(f"{args.file.stem}.results.{fmt}")
    progress = Progress(f"batch {batch.batch_id}", batch.lines)
    try:
        with (
            database_url() as url,
            psycopg.connect(url, autocommit=True) as conn,
            psycopg.connect(url, autocommit=True) as append_conn,
        ):
            results = import_batch(Coalition(), conn, batch, append_conn, progress)
    except psycopg.OperationalError as exc:
        progress.done()
        # Chunks committed before stay; each record is idempotent by its reference.
        print(
            f"the database went away ({exc.sqlstate or 'no connection'}): re-submit the"
            " batch; the lines already written replay",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    progress.done()
    text, totals = write_results(fmt, batch.batch_id, results)
    out.write_text(text, encoding="utf-8")
    print(
        f"batch {batch.batch_id}: {totals['lines']:,} lines, {totals['accepted']:,} accepted"
        f" ({totals['replayed']:,} replayed), {totals['refused']:,} refused; results in {out}"
    )
    return EXIT_OK if totals["refused"] == 0 else EXIT_REFUSED


def _usage(message: str) -> int:
    print(f"coalition batch import: {message}", file=sys.stderr)
    return EXIT_USAGE

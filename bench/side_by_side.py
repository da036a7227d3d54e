"""Our durable appends against a plain PL/pgSQL double-entry ledger, in one run.

    .venv/bin/python -m bench.side_by_side [--quick]

Interleaved rounds (the order rotates each round) of:

  ours, single call   16 caller threads, one entry each per call, through one GroupCommitter
                      (chain, Merkle tree, idempotency, the ledger's rules);
  ours, batched       batches of 1000 per call on one connection, through
                      Journal.append_stream (batch n+1 judged while batch n commits), and
                      through plain Journal.append (one batch at a time) for reference;
  PL/pgSQL            bench/_plpgsql.py: lock both accounts in id order, check the bound,
                      update both balances, insert two entry rows — no chain, no lots, no
                      idempotency — 16 connections, one transfer per call, then 100 per call.

Every call is durable (synchronous_commit as the server says; the facts print it). For
each run: entries/s, and where the machine's CPU went in the window, as shares of all
cores: this process (Python: callers and committer), the postgres processes, anything
else, and idle. Ratios are ours ÷ PL/pgSQL, per round, then the median.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from bench import _callers, _plpgsql
from bench._common import (
    Report,
    SummaryRow,
    fmt_rate,
    machine_facts,
    note,
    parse_args,
    print_facts,
    print_table,
    scratch_database,
)
from bench._workload import grow, open_accounts, transfers
from ledger.journal import Appended, AppendResult, Journal
from ledger.requests import EntryRequest

CALLERS = 16
OUR_BATCH = 1000
PL_BATCH = 100
START_SIZE = 10_000
_TICKS = os.sysconf("SC_CLK_TCK")


class CpuShares:
    """Where the machine's CPU went between start and stop, as shares of all cores.

    Postgres processes come and go with connections, so a thread keeps the latest
    reading of each; one born and gone between two samples (0.1 s) is missed.
    """

    def __init__(self) -> None:
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._sample()
        self._wall = time.perf_counter()
        self._mine = time.process_time()
        self._idle, self._total = _machine_jiffies()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                text = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            name, rest = text.split("(", 1)[1].rsplit(")", 1)
            if name != "postgres":
                continue
            fields = rest.split()
            seconds = (int(fields[11]) + int(fields[12])) / _TICKS
            pid = int(entry.name)
            self._first.setdefault(pid, seconds)
            self._last[pid] = seconds

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            self._sample()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample()
        wall = time.perf_counter() - self._wall
        capacity = wall * (os.cpu_count() or 1)
        idle, total = _machine_jiffies()
        idle_share = (idle - self._idle) / max(1, total - self._total)
        mine = (time.process_time() - self._mine) / capacity
        server = sum(self._last[p] - self._first[p] for p in self._last) / capacity
        return {
            "client": mine,
            "postgres": server,
            "other": max(0.0, 1 - idle_share - mine - server),
            "idle": idle_share,
        }


def _machine_jiffies() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait, all but guest


def _expect(results: list[AppendResult]) -> None:
    for result in results:
        if not isinstance(result, Appended):
            raise RuntimeError(f"the benchmark entry was rejected: {result}")


def ours_single(url: str, seconds: float, tag: str) -> tuple[int, float]:
    measured = _callers.single_calls(url, CALLERS, seconds, f"ss-{tag}")
    return measured.count, measured.seconds


def ours_stream(url: str, seconds: float, tag: str) -> tuple[int, float]:
    """Batches of OUR_BATCH through append_stream: the next is taken while one commits."""
    requests = transfers(f"sb-{tag}")
    journal = Journal()
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    ended = started

    def take(wait: bool) -> list[EntryRequest] | None:
        if time.perf_counter() >= deadline:
            return None
        return [next(requests) for _ in range(OUR_BATCH)]

    def done(batch: Any, outcome: list[AppendResult] | BaseException) -> None:
        nonlocal count, ended
        if isinstance(outcome, BaseException):
            raise outcome
        _expect(outcome)
        count += len(outcome)
        ended = time.perf_counter()

    with psycopg.connect(url, autocommit=True) as conn:
        journal.append_stream(conn, take, done)
    return count, ended - started


def ours_batched(url: str, seconds: float, tag: str) -> tuple[int, float]:
    measured = _callers.batched(url, OUR_BATCH, seconds, f"sj-{tag}")
    return measured.count, measured.seconds


def _pl(url: str, seconds: float, per_call: int) -> tuple[int, float]:
    conns = [psycopg.connect(url, autocommit=True) for _ in range(CALLERS)]
    try:
        if per_call == 1:

            def call(thread: int, n: int) -> None:
                conns[thread].execute(
                    "SELECT pl_transfer(%s, %s, %s)", _plpgsql.pair(thread * 1_000_003 + n)
                )

        else:

            def call(thread: int, n: int) -> None:
                pairs = [
                    _plpgsql.pair(thread * 1_000_003 + n * per_call + i) for i in range(per_call)
                ]
                conns[thread].execute(
                    "SELECT pl_transfers(%s, %s, %s)",
                    ([p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs]),
                )

        measured = _callers._run_threads(CALLERS, seconds, call)
        return measured.count * per_call, measured.seconds
    finally:
        for c in conns:
            c.close()


RUNS: dict[str, Callable[[str, float, str], tuple[int, float]]] = {
    "ours, single call (16 callers, group commit)": ours_single,
    "PL/pgSQL, single call (16 connections)": lambda url, s, tag: _pl(url, s, 1),
    f"ours, batched {OUR_BATCH} per call (append_stream)": ours_stream,
    f"PL/pgSQL, {PL_BATCH} per call (16 connections)": lambda url, s, tag: _pl(url, s, PL_BATCH),
    f"ours, batched {OUR_BATCH} per call (Journal.append)": ours_batched,
}
SINGLE, PL_SINGLE, STREAM, PL_BATCHED, BATCHED = RUNS


def _rounds(names: list[str], count: int) -> Iterator[list[str]]:
    for r in range(count):
        shift = r % len(names)
        yield names[shift:] + names[:shift]


def main() -> None:
    args = parse_args(__doc__ or "")
    seconds = 2.0 if args.quick else 6.0
    rounds_count = 1 if args.quick else 3
    report = Report("side_by_side", args.quick)
    measured: dict[str, list[dict[str, Any]]] = {name: [] for name in RUNS}
    with scratch_database() as db:
        report.facts = machine_facts(db.url)
        print_facts(report.facts)
        with psycopg.connect(db.url, autocommit=True) as conn:
            journal = Journal()
            open_accounts(conn, journal)
            grow(conn, journal, START_SIZE)
            _plpgsql.create(conn)
        for number, order in enumerate(_rounds(list(RUNS), rounds_count)):
            note(f"round {number + 1} of {rounds_count}")
            for name in order:
                cpu = CpuShares()
                count, window = RUNS[name](db.url, seconds, f"r{number}")
                shares = cpu.stop()
                rate = count / window
                measured[name].append({"round": number, "per_second": rate, "cpu": shares})
                note(f"  {name}: {fmt_rate(rate)} entries/s")
    _print(report, measured, rounds_count, seconds)
    report.figures = {"seconds_per_run": seconds, "rounds": rounds_count, "runs": measured}
    report.write()


def _share(cpu: dict[str, float]) -> str:
    return (
        f"{100 * cpu['client']:.0f} / {100 * cpu['postgres']:.0f} / {100 * cpu['other']:.0f}"
        f" / {100 * cpu['idle']:.0f}"
    )


def _print(
    report: Report, measured: dict[str, list[dict[str, Any]]], rounds: int, seconds: float
) -> None:
    rows = []
    for name, runs in measured.items():
        rates = [r["per_second"] for r in runs]
        for r in runs:
            rows.append([name, r["round"] + 1, fmt_rate(r["per_second"]), _share(r["cpu"])])
        if rounds > 1:
            rows.append([name, "median", fmt_rate(statistics.median(rates)), ""])
    print_table(
        f"entries/s, {seconds:.0f} s per run; CPU % of all cores: this process / postgres /"
        " other / idle",
        ["run", "round", "entries/s", "CPU client / pg / other / idle"],
        rows,
    )

    def ratios(ours: str, theirs: str) -> list[float]:
        return [
            a["per_second"] / b["per_second"]
            for a, b in zip(measured[ours], measured[theirs], strict=True)
        ]

    single = ratios(SINGLE, PL_SINGLE)
    batched = ratios(STREAM, PL_BATCHED)
    stream_gain = ratios(STREAM, BATCHED)
    print_table(
        "ratios, per round (ours ÷ PL/pgSQL)",
        ["what", "per round", "median"],
        [
            [
                "single call: ours ÷ PL/pgSQL single call",
                ", ".join(f"{x:.2f}" for x in single),
                f"{statistics.median(single):.2f}",
            ],
            [
                f"batched: ours {OUR_BATCH}/call ÷ PL/pgSQL {PL_BATCH}/call",
                ", ".join(f"{x:.2f}" for x in batched),
                f"{statistics.median(batched):.2f}",
            ],
            [
                "append_stream ÷ Journal.append (both 1000/call)",
                ", ".join(f"{x:.2f}" for x in stream_gain),
                f"{statistics.median(stream_gain):.2f}",
            ],
        ],
    )
    stream_rate = statistics.median(r["per_second"] for r in measured[STREAM])
    report.summary = [
        SummaryRow(
            "Single call, 16 callers: ours ÷ PL/pgSQL (same run)",
            f"{statistics.median(single):.2f}x",
            "≥ 2x",
            statistics.median(single) >= 2,
        ),
        SummaryRow(
            f"Batched {OUR_BATCH}/call (append_stream), entries/s",
            fmt_rate(stream_rate),
            "≥ 12,000",
            stream_rate >= 12_000,
        ),
        SummaryRow(
            f"Batched: ours ÷ PL/pgSQL {PL_BATCH}/call", f"{statistics.median(batched):.2f}x"
        ),
    ]
    print_table(
        "summary",
        ["metric", "result", "target", "met"],
        [
            [r.metric, r.value, r.target, "" if r.met is None else ("yes" if r.met else "NO")]
            for r in report.summary
        ],
    )


if __name__ == "__main__":
    main()

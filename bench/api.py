"""The HTTP API under load: `coalition serve --workers 1` and `--workers N` (default N:
the cores) side by side on one fresh database, 32 concurrent connections from a load
generator on the same machine.

    .venv/bin/python -m bench.api [--quick] [--workers N]

Both servers run from the start; each operation is measured on the one-worker server and
then at once on the N-worker one, and the table gives req/s, p50/p99, the ratio N : 1 and
where the machine's CPU went in each phase (the share of all cores busy: the server's
processes, the bench database's PostgreSQL backends, and everything else — the load
generator, PostgreSQL's own writers, other people's work).

Three operations, one after the other, each for 15 s per server (--quick: 3 s) after a
1 s warm-up, in --rounds slices (default 3) alternating between the servers; p50 is the
median slice's, p99 the worst slice's:
an earn mutation (a partner key, a new reference per request, durable when the server
commits synchronously), a member balance query (a partner key) and a 100-item journal
page at a random cursor (an auditor key). The load generator is wrk (one thread; a Lua
script sets the body and the Authorization header) when it is installed, else an
asyncio+httpx loop in a separate process. Every response is checked: a non-200, a GraphQL
error, a refusal or a short page counts as failed and is excluded from req/s.

Each client key gets a token bucket (coalition/api/ratelimit.py), so the load is spread
over 32 keys per role, as 32 tills would; a 429 would be counted as a failure. Latency is
the generator's own (closed loop: a slow answer delays that connection's next request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import psycopg

from bench._common import (
    Report,
    SummaryRow,
    machine_facts,
    note,
    print_facts,
    print_table,
    scratch_database,
)
from coalition.api.convert import cursor
from coalition.api_keys import create_key
from coalition.context import Coalition
from coalition.members import enroll_member
from coalition.outcomes import Refusal
from coalition.settings import DEFAULT_LOG_ORIGIN
from ledger.signing_key import generate_signer_file
from ledger.timefmt import now_us

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 32
KEYS_PER_ROLE = 32
PAGE_ITEMS = 100
BALANCE_TARGET_PER_SECOND = 2_000
EARN_TARGET_PER_SECOND = 1_000
P99_TARGET_MS = 100.0
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
READY_TIMEOUT_SECONDS = 120.0

EARN = (
    "mutation Earn($ref: String!, $m: String!) { earn(reference: $ref, member: {memberId: $m},"
    ' purchaseMinor: 250000, currency: "RUB") { __typename ... on Earned { seq points } } }'
)
BALANCE = (
    "query Balance($m: String!) { member(memberId: $m, historyFirst: 1)"
    " { memberId balancePoints availablePoints heldPoints } }"
)
PAGE = (
    "query Page($after: String) { journalEntries(first: 100, after: $after) { edges { cursor"
    " node { seq time kind refScope refKey canonicalJson leafHashHex } }"
    " pageInfo { hasNextPage endCursor } } }"
)


@dataclass(frozen=True, slots=True)
class Scenario:
    """What one load run sends and what every good answer must contain."""

    name: str
    query: str
    keys: tuple[str, ...]
    choices: tuple[str, ...]  # JSON members of "variables", taken in turn
    reference_prefix: str | None  # set: each request adds a new "ref" variable
    expect: str  # a good body contains this …
    expect_count: int  # … this many times


def _variables(s: Scenario, worker: int, n: int) -> str:
    choice = s.choices[(n + worker) % len(s.choices)]
    if s.reference_prefix is None:
        return "{" + choice + "}"
    return '{"ref":"' + f"{s.reference_prefix}-{worker}-{n}" + '",' + choice + "}"


# The same bodies as _variables, built in wrk's Lua; counters live per wrk thread and
# done() (in wrk's main Lua state) sums them from the threads setup() kept.
LUA = r"""
local query = [==[@QUERY@]==]
local keys = {@KEYS@}
local choices = {@CHOICES@}
local prefix = @PREFIX@
local expect = [==[@EXPECT@]==]
local expect_count = @EXPECT_COUNT@
local out_path = [==[@OUT@]==]
local threads = {}
local next_id = 1

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  n = 0; good = 0; bad = 0; limited = 0; sample = ""
end

function request()
  n = n + 1
  local choice = choices[(n + id) % #choices + 1]
  local vars = "{" .. choice .. "}"
  if prefix then
    vars = '{"ref":"' .. prefix .. "-" .. id .. "-" .. n .. '",' .. choice .. "}"
  end
  local body = '{"query":' .. query .. ',"variables":' .. vars .. "}"
  local headers = {["Content-Type"] = "application/json",
                   ["Authorization"] = "Bearer " .. keys[(n + id) % #keys + 1]}
  return wrk.format("POST", "/graphql", headers, body)
end

local function count(body, text)
  local found, at = 0, 1
  while true do
    local _, last = string.find(body, text, at, true)
    if not last then return found end
    found = found + 1
    at = last + 1
  end
end

function response(status, headers, body)
  local errors = string.find(body, '"errors"', 1, true)
  if status == 200 and count(body, expect) == expect_count and not errors then
    good = good + 1
  else
    bad = bad + 1
    if status == 429 then limited = limited + 1 end
    if sample == "" then sample = status .. " " .. string.sub(body, 1, 400) end
  end
end

function done(summary, latency, requests)
  local g, b, l, s = 0, 0, 0, ""
  for _, t in ipairs(threads) do
    g = g + t:get("good"); b = b + t:get("bad"); l = l + t:get("limited")
    if s == "" then s = t:get("sample") end
  end
  local e = summary.errors
  local f = io.open(out_path, "w")
  f:write(string.format(
    '{"requests":%d,"duration_us":%d,"good":%d,"bad":%d,"rate_limited":%d,' ..
    '"socket_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, g, b, l, e.connect + e.read + e.write,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
  f:write(s)
  f:close()
end
"""


def _lua_literal(text: str) -> str:
    assert "]==]" not in text
    return f"[==[{text}]==]"


def _lua(s: Scenario, out: Path) -> str:
    fields = {
        "@QUERY@": json.dumps(s.query),
        "@KEYS@": ",".join(_lua_literal(k) for k in s.keys),
        "@CHOICES@": ",".join(_lua_literal(c) for c in s.choices),
        "@PREFIX@": "nil" if s.reference_prefix is None else _lua_literal(s.reference_prefix),
        "@EXPECT@": s.expect,
        "@EXPECT_COUNT@": str(s.expect_count),
        "@OUT@": str(out),
    }
    script = LUA
    for field, value in fields.items():
        script = script.replace(field, value)
    return script


def _run_wrk(base_url: str, s: Scenario, seconds: float, work: Path) -> dict[str, Any]:
    script, out = work / f"{s.name}.lua", work / f"{s.name}.out"
    script.write_text(_lua(s, out))
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--timeout", "10s"]
    done = subprocess.run([*command, "-s", str(script), base_url], capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        sys.exit(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    first, _, sample = out.read_text().partition("\n")
    result: dict[str, Any] = json.loads(first)
    result["sample_failure"] = sample
    return result


def _run_httpx(base_url: str, s: Scenario, seconds: float) -> dict[str, Any]:
    return asyncio.run(_httpx_load(base_url, s, seconds))


async def _httpx_load(base_url: str, s: Scenario, seconds: float) -> dict[str, Any]:
    import httpx

    latencies_us: list[int] = []
    counts = {"good": 0, "bad": 0, "rate_limited": 0, "socket_errors": 0, "timeouts": 0}
    sample = ""
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=10.0) as client:
        started = time.perf_counter()
        deadline = started + seconds

        async def connection(worker: int) -> None:
            nonlocal sample
            n = 0
            while time.perf_counter() < deadline:
                n += 1
                body = json.dumps({"query": s.query})[:-1] + ',"variables":'
                body += _variables(s, worker, n) + "}"
                key = s.keys[(n + worker) % len(s.keys)]
                sent = time.perf_counter()
                try:
                    r = await client.post(
                        "/graphql",
                        content=body,
                        headers={
                            "Content-Type": "application/json",
                            "Authorization": f"Bearer {key}",
                        },
                    )
                except httpx.TimeoutException:
                    counts["timeouts"] += 1
                    continue
                except httpx.TransportError:
                    counts["socket_errors"] += 1
                    continue
                latencies_us.append(round(1e6 * (time.perf_counter() - sent)))
                text = r.text
                if (
                    r.status_code == 200
                    and text.count(s.expect) == s.expect_count
                    and '"errors"' not in text
                ):
                    counts["good"] += 1
                else:
                    counts["bad"] += 1
                    counts["rate_limited"] += r.status_code == 429
                    sample = sample or f"{r.status_code} {text[:400]}"

        await asyncio.gather(*(connection(w) for w in range(1, CONNECTIONS + 1)))
        duration_us = round(1e6 * (time.perf_counter() - started))
    ordered = sorted(latencies_us) or [0]
    return {
        "requests": len(latencies_us),
        "duration_us": duration_us,
        **counts,
        "p50_us": ordered[int(0.50 * (len(ordered) - 1))],
        "p99_us": ordered[int(0.99 * (len(ordered) - 1))],
        "max_us": ordered[-1],
        "sample_failure": sample,
    }


def _load(base_url: str, s: Scenario, seconds: float, work: Path) -> dict[str, Any]:
    if shutil.which("wrk"):
        return _run_wrk(base_url, s, seconds, work)
    # Its own process, so that the generator's Python does not share the server's GIL.
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_run_httpx, base_url, s, seconds).result()


def _coalition_command() -> list[str]:
    """The installed ``coalition`` script; else its entry point run by this interpreter
    (a venv holding the dependencies but not the project itself)."""
    script = Path(sys.executable).with_name("coalition")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "coalition.cli"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(base_url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"coalition serve exited ({server.returncode}):\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    sys.exit(f"coalition serve not ready after {READY_TIMEOUT_SECONDS:g} s")


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)  # uvicorn stops every worker, the checkpointer stops
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# -- CPU: where the machine's time went during a phase ------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _system_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from /proc/stat (0, 0 off Linux)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def _process_table() -> dict[int, tuple[int, str, int]]:
    """pid → (parent pid, command name, utime + stime jiffies)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        rest = text[text.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(rest[1]), name, int(rest[11]) + int(rest[12]))
    return table


def _server_tree(table: dict[int, tuple[int, str, int]], root: int) -> set[int]:
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _, _) in table.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    return tree


def _backends(db_url: str) -> set[int]:
    """PostgreSQL's backends serving the bench database (not other people's)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchall()
    return {int(pid) for (pid,) in rows}


class _CpuMeter:
    """CPU seconds spent during a slice by the server (its parent and every worker), by
    the PostgreSQL backends of the bench database, and by the whole machine (busy, and
    all): per-process deltas, so a process that ends or starts meanwhile does not skew
    them (a process that starts counts from zero)."""

    def __init__(self, server_pid: int, db_url: str) -> None:
        self._server_pid = server_pid
        self._db_url = db_url
        self._table = _process_table()
        self._system = _system_ticks()

    def spent(self) -> dict[str, float]:
        table = _process_table()
        busy, total = _system_ticks()

        def of(pids: set[int]) -> float:
            return sum(
                table[p][2] - (self._table[p][2] if p in self._table else 0)
                for p in pids
                if p in table
            )

        return {
            "server": of(_server_tree(table, self._server_pid)) / _TICKS,
            "postgres": of(_backends(self._db_url)) / _TICKS,
            "busy": (busy - self._system[0]) / _TICKS,
            "all": (total - self._system[1]) / _TICKS,
        }


def _cpu_share(spent: dict[str, float], wall: float) -> dict[str, Any]:
    """Shares of the machine's capacity (all cores) busy in the phase, by whom."""
    capacity = spent["all"] or wall * CORES
    share = {k: spent[k] / capacity for k in ("server", "postgres", "busy")}
    share["other"] = max(0.0, share["busy"] - share["server"] - share["postgres"])
    return share


@dataclass
class _Server:
    workers: int
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path


def _start(workers: int, env: dict[str, str], work: Path) -> _Server:
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = work / f"serve-{workers}.log"
    note(f"starting coalition serve --workers {workers} on {base_url}")
    command = [*_coalition_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [*command, "--workers", str(workers)],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = _Server(workers, base_url, process, log)
    _wait_ready(base_url, process, log)
    return server


def _prepare(db_url: str, members: int) -> tuple[list[str], list[str], list[str]]:
    """Members to earn for and query, and 32 keys each for tills and auditors."""
    co = Coalition()
    with psycopg.connect(db_url, autocommit=True) as conn:
        ids = [f"B{i:05d}" for i in range(members)]
        for member in ids:
            assert not isinstance(enroll_member(co, conn, member), Refusal)
        tills = [
            create_key(conn, "partner", "grocer", f"bench till {i}", now_us())[0]
            for i in range(KEYS_PER_ROLE)
        ]
        auditors = [
            create_key(conn, "auditor", None, f"bench auditor {i}", now_us())[0]
            for i in range(KEYS_PER_ROLE)
        ]
    return ids, tills, auditors


def _cursors(db_url: str, rng: random.Random) -> list[str]:
    """Cursors with at least a full page after them, as the API writes them."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT min(seq), max(seq) FROM ledger_entry").fetchone()
    assert row is not None and row[0] is not None
    low, high = int(row[0]), int(row[1]) - PAGE_ITEMS
    if high < low:
        sys.exit(f"the journal has {row[1] - row[0] + 1} entries: too few for a full page")
    return [cursor(rng.randint(low, high)) for _ in range(1000)]


def _committed(db_url: str, prefix: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM ledger_entry WHERE ref_scope = 'partner:grocer'"
            " AND ref_key LIKE %s",
            (prefix + "-%",),
        ).fetchone()
    return int(row[0]) if row else 0


def _figures(raw: dict[str, Any]) -> dict[str, Any]:
    seconds = raw["duration_us"] / 1e6
    return {
        **raw,
        "good_per_second": raw["good"] / seconds if seconds else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "failed": raw["bad"] + raw["socket_errors"] + raw["timeouts"],
    }


def _for(s: Scenario, server: _Server, prefix: str | None, phase: str) -> Scenario:
    """The scenario with references of its own per server and phase (earns), and per
    round (wrk numbers requests from 1 again at each start)."""
    if prefix is None:
        return s
    return replace(s, reference_prefix=f"{phase}-{prefix}-w{server.workers}-{secrets.token_hex(3)}")


_COUNTS = ("requests", "duration_us", "good", "bad", "rate_limited", "socket_errors", "timeouts")


def _combined(raws: list[dict[str, Any]]) -> dict[str, Any]:
    """One operation's rounds on one server as one figure: counts and time summed; p50
    the median round's, p99 and max the worst round's (wrk gives percentiles, not
    samples)."""
    summed = {k: sum(int(r[k]) for r in raws) for k in _COUNTS}
    p50s = sorted(int(r["p50_us"]) for r in raws)
    summed["p50_us"] = p50s[len(p50s) // 2]
    summed["p99_us"] = max(int(r["p99_us"]) for r in raws)
    summed["max_us"] = max(int(r["max_us"]) for r in raws)
    summed["rounds"] = len(raws)
    figures = _figures(summed)
    figures["sample_failure"] = next((r["sample_failure"] for r in raws if r["sample_failure"]), "")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 s per operation, not 15 s")
    parser.add_argument(
        "--workers",
        type=int,
        default=CORES,
        help=f"the worker count measured beside one worker (default: the cores, {CORES})",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="slices each operation's time is cut into, alternating servers (default 3;"
        " --quick: 1)",
    )
    args = parser.parse_args()
    seconds = 3.0 if args.quick else 15.0
    rounds = max(1, args.rounds or (1 if args.quick else 3))
    slice_ = float(max(1, round(seconds / rounds)))  # wrk takes whole seconds
    seconds = slice_ * rounds
    members = 200 if args.quick else 1_000
    counts = sorted({1, max(1, args.workers)})
    report = Report("api", args.quick)
    run = secrets.token_hex(4)
    rng = random.Random(5)
    with scratch_database() as db, tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        work = Path(tmp)
        report.facts = machine_facts(db.url)
        report.facts["load_generator"] = (
            "wrk, 1 thread" if shutil.which("wrk") else "asyncio+httpx, separate process"
        )
        report.facts["connections"] = CONNECTIONS
        report.facts["server"] += (
            f"; API: coalition serve, uvicorn, {' and '.join(map(str, counts))} worker(s),"
            " 127.0.0.1"
        )
        report.facts["serve_command"] = " ".join([*_coalition_command(), "serve", "--workers N"])
        print_facts(report.facts)
        generate_signer_file(work / "log.skey", DEFAULT_LOG_ORIGIN)
        env = {
            **os.environ,
            "DATABASE_URL": db.url,
            "COALITION_ENV": "production",
            "COALITION_SIGNING_KEY_FILE": str(work / "log.skey"),
        }
        env.pop("COALITION_SIGNING_KEY", None)
        servers: list[_Server] = []
        try:
            # Every server runs from the start, on the same database: each operation is
            # measured on one, then at once on the next, so the machine's other load and
            # the journal's size are as alike as a shared machine allows.
            for workers in counts:
                servers.append(_start(workers, env, work))
            note(f"enrolling {members} members, creating keys")
            ids, tills, auditors = _prepare(db.url, members)
            member_choices = tuple(f'"m":"{m}"' for m in ids)
            results: dict[tuple[str, int], dict[str, Any]] = {}

            def measure(s: Scenario, warm: Scenario, prefix: str | None = None) -> None:
                """Each server warmed up, then ``rounds`` slices of ``seconds / rounds``
                on each, alternating (1, N, N, 1, 1, N, …) so that a change in the
                machine's other load falls on both alike."""
                for server in servers:
                    note(f"{s.name}, {server.workers} worker(s): 1 s warm-up")
                    _load(server.base_url, _for(warm, server, prefix, "warm"), 1.0, work)
                raws: dict[int, list[dict[str, Any]]] = {srv.workers: [] for srv in servers}
                cpus: dict[int, list[dict[str, float]]] = {srv.workers: [] for srv in servers}
                for r in range(rounds):
                    for server in servers if r % 2 == 0 else servers[::-1]:
                        note(f"{s.name}, {server.workers} worker(s): round {r + 1}, {slice_:g} s")
                        meter = _CpuMeter(server.process.pid, db.url)
                        scenario = _for(s, server, prefix, "bench")
                        raws[server.workers].append(_load(server.base_url, scenario, slice_, work))
                        cpus[server.workers].append(meter.spent())
                for server in servers:
                    figures = _combined(raws[server.workers])
                    spent = {k: sum(c[k] for c in cpus[server.workers]) for k in cpus[1][0]}
                    figures["cpu"] = _cpu_share(spent, seconds)
                    if prefix is not None:
                        figures["committed_entries"] = _committed(
                            db.url, f"bench-{prefix}-w{server.workers}"
                        )
                    results[(s.name, server.workers)] = figures

            earn = Scenario("earn", EARN, tuple(tills), member_choices, run, '"Earned"', 1)
            measure(earn, earn, prefix=run)
            balance = Scenario(
                "balance", BALANCE, tuple(tills), member_choices, None, '"balancePoints"', 1
            )
            measure(balance, balance)
            cursors = tuple(f'"after":"{c}"' for c in _cursors(db.url, rng))
            page = Scenario(
                "journal page", PAGE, tuple(auditors), cursors, None, '"leafHashHex"', PAGE_ITEMS
            )
            measure(page, page)
        finally:
            for server in servers:
                _stop(server.process)
    _print_and_write(report, results, seconds, counts)


def _print_and_write(
    report: Report,
    results: dict[tuple[str, int], dict[str, Any]],
    seconds: float,
    counts: list[int],
) -> None:
    durable = report.facts.get("synchronous_commit") == "on" and report.facts.get("fsync") == "on"
    most = counts[-1]

    def met(name: str, r: dict[str, Any]) -> bool | None:
        if name == "earn":
            return bool(
                r["good_per_second"] >= EARN_TARGET_PER_SECOND
                and r["p99_ms"] < P99_TARGET_MS
                and durable
                and r["failed"] == 0
            )
        if name == "balance":
            return bool(
                r["good_per_second"] >= BALANCE_TARGET_PER_SECOND
                and r["p99_ms"] < P99_TARGET_MS
                and r["failed"] == 0
            )
        return None

    targets = {
        "earn": f"≥ {EARN_TARGET_PER_SECOND:,}/s durable, p99 < {P99_TARGET_MS:g} ms",
        "balance": f"≥ {BALANCE_TARGET_PER_SECOND:,}/s, p99 < {P99_TARGET_MS:g} ms",
    }
    rows = []
    for (name, workers), r in results.items():
        cpu = r["cpu"]
        ok = met(name, r)
        rows.append(
            [
                name,
                workers,
                f"{r['good']:,}",
                f"{r['good_per_second']:,.0f}",
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                f"{r['failed']:,}",
                f"{100 * cpu['busy']:.0f} %",
                f"{100 * cpu['server']:.0f} / {100 * cpu['postgres']:.0f} / "
                f"{100 * cpu['other']:.0f} %",
                "" if ok is None else ("yes" if ok else "NO"),
            ]
        )
    print_table(
        f"API, {CONNECTIONS} connections, {seconds:g} s each"
        f" ({report.facts['load_generator']}; {CORES} cores; CPU: share of all cores busy,"
        " and by the server / its PostgreSQL backends / everything else)",
        [
            "operation",
            "workers",
            "answered",
            "req/s",
            "p50 ms",
            "p99 ms",
            "failed",
            "CPU busy",
            "server / pg / other",
            "target met",
        ],
        rows,
    )
    if len(counts) > 1:
        ratios = []
        for name in ("earn", "balance", "journal page"):
            one, many = results[(name, 1)], results[(name, most)]
            ratios.append(
                [
                    name,
                    f"{many['good_per_second'] / max(one['good_per_second'], 1e-9):.2f}x",
                    f"{many['p99_ms'] / max(one['p99_ms'], 1e-9):.2f}x",
                ]
            )
        print_table(f"{most} workers against 1, same run", ["operation", "req/s", "p99"], ratios)
    for workers in counts:
        earn = results[("earn", workers)]
        print(
            f"earn, {workers} worker(s): {earn['good']:,} acknowledged,"
            f" {earn['committed_entries']:,} in the journal (requests in flight at the end"
            f" may commit unacknowledged); durable: {'yes' if durable else 'no'}"
            " (synchronous_commit, fsync)"
        )
    for (name, workers), r in results.items():
        if r["failed"]:
            print(f"{name}, {workers} worker(s): first failed answer: {r['sample_failure'][:300]}")
        if not r["requests"]:
            print(f"{name}, {workers} worker(s): NO REQUEST WAS ANSWERED: the server stalled")
    report.figures = {
        "seconds": seconds,
        "connections": CONNECTIONS,
        "cores": CORES,
        **{f"{name}, {workers} worker(s)": r for (name, workers), r in results.items()},
    }
    report.summary = []
    for workers in counts:
        earn, balance, page = (results[(n, workers)] for n in ("earn", "balance", "journal page"))
        report.summary += [
            SummaryRow(
                f"API earn mutation, {workers} worker(s), 32 connections: req/s (p50 / p99 ms)",
                f"{earn['good_per_second']:,.0f} ({earn['p50_ms']:.1f} / {earn['p99_ms']:.1f})",
                targets["earn"],
                met("earn", earn),
            ),
            SummaryRow(
                f"API member balance query, {workers} worker(s): req/s (p50 / p99 ms)",
                f"{balance['good_per_second']:,.0f} ({balance['p50_ms']:.1f} / "
                f"{balance['p99_ms']:.1f})",
                targets["balance"],
                met("balance", balance),
            ),
            SummaryRow(
                f"API 100-item journal page, {workers} worker(s): req/s (p50 / p99 ms)",
                f"{page['good_per_second']:,.0f} ({page['p50_ms']:.1f} / {page['p99_ms']:.1f})",
            ),
        ]
    report.write()


if __name__ == "__main__":
    main()

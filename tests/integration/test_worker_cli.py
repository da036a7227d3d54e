"""``coalition worker`` as its own process against a real PostgreSQL: it runs the jobs
(recorded in coalition_job), and SIGTERM or SIGINT stops it with exit 0, one line said,
and no traceback; two workers at once sign each checkpoint once. ``apikey create
--expires`` stores the expiry, and ``apikey list`` says when a key has expired."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from coalition.job_record import job_records
from ledger.signed_note import Signer, format_signer_key
from tests.integration.test_transparency import append_entries

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS_MAX = 60


def _env(db_url: str, **extra: str) -> dict[str, str]:
    signer = Signer.from_seed("ledger.worker-test.example", bytes(range(32)))
    return {
        **os.environ,
        "DATABASE_URL": db_url,
        "COALITION_SIGNING_KEY": format_signer_key(signer),
        "COALITION_LOG_ORIGIN": "ledger.worker-test.example",
        # Checkpoints every second, when there is anything new; the rest now and then.
        "COALITION_CHECKPOINT_ENTRIES": "1",
        "COALITION_JOB_HOLDS_SECONDS": "1",
        **extra,
    }


def _worker(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "coalition.cli", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_runs(db_url: str, job: str, runs: int) -> None:
    deadline = time.monotonic() + START_SECONDS_MAX
    while True:
        with psycopg.connect(db_url, autocommit=True) as conn:
            records = {r.job: r for r in job_records(conn)}
        if job in records and records[job].runs["ok"] >= runs:
            return
        assert time.monotonic() < deadline, f"{job} did not run {runs} times: {records}"
        time.sleep(0.2)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_worker_runs_the_jobs_and_stops_cleanly(db_url: str, how: signal.Signals) -> None:
    worker = _worker(_env(db_url))
    try:
        _wait_for_runs(db_url, "holds", 2)
        worker.send_signal(how)
        out, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert "Traceback" not in err and "Traceback" not in out, err
    assert out.splitlines()[0].startswith("worker running: checkpoint every 1 s")
    assert out.splitlines()[-1] == "worker stopped"
    with psycopg.connect(db_url, autocommit=True) as conn:
        records = {r.job: r for r in job_records(conn)}
    assert set(records) == {
        "checkpoint",
        "expiry",
        "holds",
        "settle",
        "console",
        "verify",
        "outbox",
        "partitions",
    }
    assert all(r.runs["failed"] == 0 for r in records.values()), records


def test_two_workers_sign_each_checkpoint_once(db_url: str) -> None:
    workers = [_worker(_env(db_url)) for _ in range(2)]
    try:
        _wait_for_runs(db_url, "checkpoint", 4)
        with psycopg.connect(db_url, autocommit=True) as conn:
            for n in range(3):  # new entries for the checkpoints to cover
                append_entries(conn, 1, tag=f"w{n}")
                time.sleep(1.5)
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            _, err = w.communicate(timeout=30)
            assert w.returncode == 0 and "Traceback" not in err, err
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    with psycopg.connect(db_url, autocommit=True) as conn:
        sizes = [r[0] for r in conn.execute("SELECT tree_size FROM ledger_checkpoint ORDER BY 1")]
    assert sizes == sorted(set(sizes)), f"a tree size signed twice: {sizes}"


def test_apikey_create_expires_and_list_says_expired(db_url: str) -> None:
    env = _env(db_url)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "coalition.cli", "apikey", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    made = cli(
        "create", "--role", "metrics", "--label", "scraper", "--expires", "2100-01-01T00:00:00Z"
    )
    assert made.returncode == 0, made.stderr
    assert "expires 2100-01-01T00:00:00.000000Z" in made.stderr
    past = cli("create", "--role", "auditor", "--label", "x", "--expires", "2020-01-01")
    assert past.returncode == 2 and "future" in past.stderr
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO coalition_api_key VALUES ('aaaaaaaaaaaa', %s, 'auditor', NULL,"
            " 'old', 1, NULL, 2)",
            (bytes(32),),
        )
    listed = cli("list").stdout.splitlines()
    assert any(line.startswith("aaaaaaaaaaaa") and " expired " in line for line in listed), listed
    assert any("scraper" in line and " active " in line for line in listed), listed

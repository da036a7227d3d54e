"""Online verification and its record (coalition/online_verification.py,
ledger/verify_extend.py) against a real PostgreSQL: the first run is full; later runs
extend the verified tree by at most their bound of new entries; a full run comes back
when due; a tampered new entry fails the incremental run at its seq and the next run,
full, names the first failure of the journal; a failed full run waits for its cadence
unless forced; ``coalition verify`` records its outcome too."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from _journal_helpers import (
    Clock,
    earn,
    entry_json,
    expect_appended,
    rewrite_entry,
    tampering,
    write_varied_journal,
)

from coalition.cli.main import main
from coalition.job_record import job_records
from coalition.jobs import cadences, scheduled_jobs
from coalition.online_verification import VerifyPolicy, last_verification, verify_online
from coalition.scheduler import Scheduler
from coalition.settings import Settings
from ledger import checkpoint_log, reads
from ledger.journal import Journal
from ledger.signed_note import Signer, format_signer_key
from ledger.verify_extend import EMPTY, extend_verified

pytestmark = pytest.mark.postgres

Conn = psycopg.Connection[Any]
HOUR_US = 3600 * 1_000_000
POLICY = VerifyPolicy(full_every_seconds=86_400, entries_per_run=4)


@pytest.fixture()
def conn(db_url: str) -> Iterator[Conn]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


@pytest.fixture()
def journal(conn: Conn) -> tuple[Journal, Clock]:
    clock = Clock()
    journal = Journal(clock_us=clock)
    write_varied_journal(conn, journal, clock)  # 13 entries
    return journal, clock


def _append(conn: Conn, journal: Journal, clock: Clock, count: int, tag: str) -> None:
    for n in range(count):
        clock.now_us += 1_000_000
        expect_appended(journal.append(conn, [earn("member:1", 1, f"{tag}-{n}")])[0])


def test_full_then_bounded_increments_then_full_again(
    conn: Conn, journal: tuple[Journal, Clock]
) -> None:
    """Full at first (13 entries); 6 new entries take two incremental runs of at most 4;
    a run with nothing new changes nothing; a day later the run is full again. Each
    record's root is the journal's root at its size."""
    j, clock = journal
    now = clock.now_us
    first = verify_online(conn, POLICY, now, by="test")
    assert first is not None and (first.kind, first.ok, first.tree_size) == ("full", True, 13)
    assert first.root_hash == extend_verified(conn, EMPTY, 100).tree.root_hash
    _append(conn, j, clock, 6, "more")
    second = verify_online(conn, POLICY, now + 1, by="test")
    assert second is not None
    assert (second.kind, second.ok, second.from_size, second.tree_size) == (
        "incremental",
        True,
        13,
        17,
    )
    third = verify_online(conn, POLICY, now + 2, by="test")
    assert third is not None and (third.from_size, third.tree_size) == (17, 19)
    assert third.root_hash == extend_verified(conn, EMPTY, 100).tree.root_hash
    idle = verify_online(conn, POLICY, now + 3, by="test")
    assert idle is not None and (idle.from_size, idle.tree_size) == (19, 19)
    later = verify_online(conn, POLICY, now + 25 * HOUR_US, by="test")
    assert later is not None and (later.kind, later.tree_size) == ("full", 19)
    assert later.last_full_at_us == now + 25 * HOUR_US


def test_a_tampered_new_entry_fails_at_its_seq_then_in_full(
    db_url: str, conn: Conn, journal: tuple[Journal, Clock]
) -> None:
    """Entry 15, appended after the full run, rewritten with its leaf hash recomputed:
    the incremental run fails at 16's link to it (prev_link); the next run is full and
    names the first failure as the full replay sees it; the record keeps no resume
    point, so no later run trusts the tree."""
    j, clock = journal
    assert verify_online(conn, POLICY, clock.now_us, by="test") is not None
    _append(conn, j, clock, 4, "new")
    with tampering(db_url) as t:
        changed = entry_json(t, 15)
        changed["postings"][1]["amount"] = 2
        changed["postings"][0]["amount"] = -2
        rewrite_entry(t, 15, changed, rehash=True)
    failed = verify_online(conn, POLICY, clock.now_us + 1, by="test")
    assert failed is not None and (failed.kind, failed.ok) == ("incremental", False)
    assert failed.failure.startswith("seq 16: prev_link failed")
    row = conn.execute("SELECT verified_size FROM coalition_verification").fetchone()
    assert row == (None,)
    again = verify_online(conn, POLICY, clock.now_us + 2, by="test")
    assert again is not None and (again.kind, again.ok) == ("full", False)
    assert again.failure.startswith("seq 15:"), again.failure
    # A failed full run is not repeated at every tick; forced, it runs (and fails) again.
    assert verify_online(conn, POLICY, clock.now_us + 3, by="test") is None
    forced = verify_online(conn, POLICY, clock.now_us + 4, by="test", force_full=True)
    assert forced is not None and not forced.ok and forced.run_at_us == clock.now_us + 4


def test_an_incremental_run_reaching_the_head_checks_it(
    db_url: str, conn: Conn, journal: tuple[Journal, Clock]
) -> None:
    """The chain head's frontier moved behind the ledger's back: the incremental run that
    reaches the head says so (head_frontier), though every entry is intact."""
    j, clock = journal
    assert verify_online(conn, POLICY, clock.now_us, by="test") is not None
    _append(conn, j, clock, 2, "tail")
    with tampering(db_url) as t:
        t.execute("UPDATE ledger_chain SET frontier_hashes = frontier_hashes[2:]")
    failed = verify_online(conn, POLICY, clock.now_us + 1, by="test")
    assert failed is not None and not failed.ok and "head_frontier" in failed.failure
    assert reads.head(conn).tree_size == 15


def test_an_incremental_run_recomputes_each_signed_checkpoints_root(
    db_url: str, conn: Conn, journal: tuple[Journal, Clock]
) -> None:
    """A checkpoint signed at 15, inside the next run's range, agrees with the extension;
    once its stored root is changed behind the ledger's back, the run fails at entry 14
    (checkpoint_root) — the journal no longer is what was signed."""
    j, clock = journal
    assert verify_online(conn, POLICY, clock.now_us, by="test") is not None
    _append(conn, j, clock, 2, "signed")
    signer = Signer.from_seed("ledger.verify-test.example", bytes(32))
    checkpoint_log.sign_now(conn, signer, clock.now_us)
    _append(conn, j, clock, 1, "after")
    start = extend_verified(conn, EMPTY, 13).tree
    assert extend_verified(conn, start, 10).checkpoints == 1
    with tampering(db_url) as t:
        t.execute("UPDATE ledger_checkpoint SET root_hash = %s WHERE tree_size = 15", (bytes(32),))
    failed = verify_online(conn, POLICY, clock.now_us + 1, by="test")
    assert failed is not None and failed.kind == "incremental" and not failed.ok
    assert failed.failure.startswith("seq 14: checkpoint_root failed"), failed.failure


def test_coalition_verify_online_records_its_outcome(
    db_url: str, conn: Conn, journal: tuple[Journal, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`coalition verify` against the database: ok, recorded as a full run by the CLI; after
    a tamper, exit 1 and the failure recorded."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    assert last_verification(conn) is None
    assert main(["verify"]) == 0
    done = last_verification(conn)
    assert done is not None and (done.kind, done.ok, done.by, done.tree_size) == (
        "full",
        True,
        "cli",
        13,
    )
    with tampering(db_url) as t:
        t.execute("UPDATE ledger_entry SET kind = 'forged' WHERE seq = 3")
    assert main(["verify"]) == 1
    failed = last_verification(conn)
    assert failed is not None and not failed.ok
    assert failed.failure.startswith("seq 3: entry_columns failed"), failed.failure


def test_the_verify_job_is_scheduled_like_the_others(
    db_url: str, conn: Conn, journal: tuple[Journal, Clock]
) -> None:
    """``COALITION_JOB_VERIFY_SECONDS`` sets its cadence (5 minutes by default, 0 = off); a
    run through the scheduler verifies and records both the job's run and the outcome;
    a failure found is the job's ``refused`` (it ran; it will not vouch)."""
    assert cadences({})["verify"] == 300.0
    signer = Signer.from_seed("ledger.verify-test.example", bytes(32))
    settings = dataclasses.replace(
        Settings.from_env(),
        log_origin="ledger.verify-test.example",
        signing_key_text=format_signer_key(signer),
    )
    off = scheduled_jobs(db_url, settings, signer, env={"COALITION_JOB_VERIFY_SECONDS": "0"})
    assert "verify" not in {j.name for j in off}
    [job] = [j for j in scheduled_jobs(db_url, settings, signer, env={}) if j.name == "verify"]
    assert Scheduler(db_url, [job]).attempt(job) == "ok"
    done = last_verification(conn)
    assert done is not None and (done.by, done.kind, done.ok, done.tree_size) == (
        "scheduler",
        "full",
        True,
        13,
    )
    with tampering(db_url) as t:
        t.execute("UPDATE ledger_entry SET kind = 'forged' WHERE seq = 3")
    conn.execute("UPDATE coalition_verification SET last_full_at_us = 0")  # a full one is due
    conn.execute("UPDATE coalition_job SET last_started_us = 0")  # and so is the job
    assert Scheduler(db_url, [job]).attempt(job) == "refused"
    [record] = [r for r in job_records(conn) if r.job == "verify"]
    assert record.last_detail.startswith("full verification failed: seq 3: entry_columns")

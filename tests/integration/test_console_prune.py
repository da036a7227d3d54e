"""Console sessions and sign-in attempts are bounded: a key keeps at most
``SESSIONS_PER_KEY_MAX`` live sessions (its oldest end as it signs in again), and the
scheduler's ``console`` job deletes what ended or expired a day ago and the attempts
past the limit's window — as the application's role, which may delete nothing else."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from coalition.api_keys import Principal, create_key
from coalition.console_prune import SESSION_KEEP_SECONDS, prune_console
from coalition.job_record import job_records
from coalition.jobs import cadences, scheduled_jobs
from coalition.scheduler import Scheduler
from coalition.settings import Settings
from coalition.signin_limit import SigninLimit
from coalition.web.sessions import SESSIONS_PER_KEY_MAX, create_session, session_principal
from ledger.signed_note import Signer, format_signer_key
from ledger.timefmt import now_us

pytestmark = pytest.mark.postgres

HOUR_US = 3600 * 1_000_000
DAY_US = 24 * HOUR_US


@pytest.fixture()
def app_conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection in the application's role: the grants of migration 0017 suffice."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET ROLE coalition_app")
        yield conn


@pytest.fixture()
def principal(db_url: str) -> Principal:
    with psycopg.connect(db_url, autocommit=True) as conn:
        _, info = create_key(conn, "auditor", None, "prune test", now_us() - 30 * DAY_US)
    return Principal(info.key_id, "auditor", None)


def _sessions(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM coalition_console_session").fetchone()
    assert row is not None
    return int(row[0])


def test_a_key_keeps_at_most_its_bound_of_live_sessions(
    app_conn: psycopg.Connection[Any], principal: Principal
) -> None:
    """Twelve sign-ins of one key: the ten newest open pages, the two oldest are ended
    (each a row still, until pruned)."""
    start = now_us()
    tokens = [create_session(app_conn, principal, start + i) for i in range(12)]
    live = [t for t in tokens if session_principal(app_conn, t, start + 20) is not None]
    assert live == tokens[-SESSIONS_PER_KEY_MAX:]
    assert _sessions(app_conn) == 12


def test_prune_deletes_ended_and_expired_sessions_and_old_attempts(
    app_conn: psycopg.Connection[Any], principal: Principal
) -> None:
    """Sessions: one expired two days ago, one signed out 25 hours ago though it would
    expire only 17 hours ago (both go), one expired an hour ago and one signed out an
    hour ago (kept a day), one live (kept).
    Attempts: one before the window (goes), one inside it (kept)."""
    now = now_us()
    limit = SigninLimit(window_seconds=900)
    old_expired = create_session(app_conn, principal, now - 3 * DAY_US)  # 8 h long
    old_ended = create_session(app_conn, principal, now - 25 * HOUR_US)
    recent_expired = create_session(app_conn, principal, now - 9 * HOUR_US)
    recent_ended = create_session(app_conn, principal, now - HOUR_US)
    live = create_session(app_conn, principal, now - HOUR_US)
    digest = {t: hashlib.sha256(t.encode()).digest() for t in (old_ended, recent_ended)}
    app_conn.execute(
        "UPDATE coalition_console_session SET ended_at_us = %s WHERE token_sha256 = %s",
        (now - 25 * HOUR_US + 1, digest[old_ended]),
    )
    app_conn.execute(
        "UPDATE coalition_console_session SET ended_at_us = %s WHERE token_sha256 = %s",
        (now - HOUR_US + 1, digest[recent_ended]),
    )
    for at_us in (now - 901 * 1_000_000, now - 10 * 1_000_000):
        app_conn.execute(
            "INSERT INTO coalition_signin_attempt (client, at_us) VALUES ('192.0.2.1', %s)",
            (at_us,),
        )
    pruned = prune_console(app_conn, limit, now)
    assert (pruned.sessions, pruned.attempts, pruned.more_left) == (2, 1, False)
    kept = {
        bytes(r[0]) for r in app_conn.execute("SELECT token_sha256 FROM coalition_console_session")
    }
    wanted = {hashlib.sha256(t.encode()).digest() for t in (recent_expired, recent_ended, live)}
    assert kept == wanted and hashlib.sha256(old_expired.encode()).digest() not in kept
    assert session_principal(app_conn, live, now) == principal
    again = prune_console(app_conn, limit, now)
    assert (again.sessions, again.attempts) == (0, 0)
    # A day after the recent ones ended, they go too.
    later = prune_console(app_conn, limit, now + SESSION_KEEP_SECONDS * 1_000_000)
    assert later.sessions == 2 and later.attempts == 1


def test_the_console_job_is_scheduled_like_the_others(db_url: str, principal: Principal) -> None:
    """``COALITION_JOB_CONSOLE_SECONDS`` sets its cadence (hourly by default, 0 = off); a
    run through the scheduler prunes and is recorded in ``coalition_job``."""
    assert cadences({})["console"] == 3600.0
    assert cadences({"COALITION_JOB_CONSOLE_SECONDS": "0"})["console"] == 0.0
    signer = Signer.from_seed("ledger.prune.example", bytes(32))
    settings = dataclasses.replace(
        Settings.from_env(),
        log_origin="ledger.prune.example",
        signing_key_text=format_signer_key(signer),
    )
    off = scheduled_jobs(db_url, settings, signer, env={"COALITION_JOB_CONSOLE_SECONDS": "0"})
    assert "console" not in {j.name for j in off}
    [job] = [j for j in scheduled_jobs(db_url, settings, signer, env={}) if j.name == "console"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        create_session(conn, principal, now_us() - 3 * DAY_US)
    assert Scheduler(db_url, [job]).attempt(job) == "ok"
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert _sessions(conn) == 0
        [record] = [r for r in job_records(conn) if r.job == "console"]
    assert record.last_outcome == "ok" and "pruned 1 console sessions" in record.last_detail

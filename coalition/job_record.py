"""The scheduler's record of its jobs (table ``coalition_job``, migration 0011): per job,
its last run and its runs counted by outcome. Written by whichever process ran the job,
under the job's advisory lock; read by ``/metrics``, so every process of a deployment
shows the same figures whichever of them ran the job."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from coalition.context import Conn

OUTCOMES = ("ok", "refused", "failed")  # "busy" is not a run: another process had the lock
DETAIL_LENGTH_MAX = 500


@dataclass(frozen=True, slots=True)
class JobRecord:
    job: str
    last_started_us: int
    last_duration_us: int
    last_outcome: str
    last_detail: str
    runs: dict[str, int]  # by outcome, "busy" included


def job_records(conn: Conn) -> list[JobRecord]:
    rows = conn.execute(
        "SELECT job, last_started_us, last_duration_us, last_outcome, last_detail, runs_ok,"
        " runs_refused, runs_failed, runs_busy FROM coalition_job ORDER BY job"
    ).fetchall()
    return [
        JobRecord(
            job,
            int(started),
            int(duration),
            outcome,
            detail,
            {"ok": int(ok), "refused": int(refused), "failed": int(failed), "busy": int(busy)},
        )
        for job, started, duration, outcome, detail, ok, refused, failed, busy in rows
    ]


def last_started_us(conn: Conn, job: str) -> int | None:
    row = conn.execute(
        "SELECT last_started_us FROM coalition_job WHERE job = %s", (job,)
    ).fetchone()
    return None if row is None else int(row[0])


def record_run(
    conn: Conn,
    job: str,
    *,
    started_us: int,
    duration_us: int,
    outcome: str,
    detail: str,
    earlier: Counter[str] | None = None,
) -> None:
    """Record a run; ``earlier`` adds outcomes this process could not record when they
    happened (the database was unreachable), so that no run goes uncounted."""
    assert outcome in OUTCOMES, outcome
    counts = Counter(earlier or ())
    counts[outcome] += 1
    conn.execute(
        "INSERT INTO coalition_job AS j (job, last_started_us, last_duration_us, last_outcome,"
        " last_detail, runs_ok, runs_refused, runs_failed, runs_busy)"
        " VALUES (%(job)s, %(started)s, %(duration)s, %(outcome)s, %(detail)s, %(ok)s,"
        " %(refused)s, %(failed)s, %(busy)s)"
        " ON CONFLICT (job) DO UPDATE SET last_started_us = excluded.last_started_us,"
        " last_duration_us = excluded.last_duration_us, last_outcome = excluded.last_outcome,"
        " last_detail = excluded.last_detail, runs_ok = j.runs_ok + excluded.runs_ok,"
        " runs_refused = j.runs_refused + excluded.runs_refused,"
        " runs_failed = j.runs_failed + excluded.runs_failed,"
        " runs_busy = j.runs_busy + excluded.runs_busy",
        {
            "job": job,
            "started": started_us,
            "duration": max(0, duration_us),
            "outcome": outcome,
            "detail": detail[:DETAIL_LENGTH_MAX],
            "ok": counts["ok"],
            "refused": counts["refused"],
            "failed": counts["failed"],
            "busy": counts["busy"],
        },
    )


def count_busy(conn: Conn, job: str) -> bool:
    """Count an attempt that found the job running elsewhere; False when the job has no
    record yet (its first run is on): the caller counts it with its own next run."""
    row = conn.execute(
        "UPDATE coalition_job SET runs_busy = runs_busy + 1 WHERE job = %s RETURNING job", (job,)
    ).fetchone()
    return row is not None

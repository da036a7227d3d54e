"""Run scheduled jobs (expiry, hold time-outs, period close, checkpoints: ``coalition.jobs``)
each on its own cadence, one runner at a time across every process of a deployment.

Each job has a thread. When the job is due the thread connects, takes the job's
session-level advisory lock without waiting (``pg_try_advisory_lock``; another process
holding it means that process is running the job: this attempt is counted ``busy`` and
goes away), reads under the lock when the job last started — anywhere — and runs it only
if its interval has passed since, so two schedulers together keep one cadence, not two.
The run's start, duration and outcome are recorded (``coalition.job_record``) before
the lock is let go. The lock lives as long as the session: a process that dies mid-run
releases it with its connection.

A job's exception is logged and recorded as ``failed``, never raised: the server goes
on, and the job is tried again at its next due time. An exception a job names as fatal
(a checkpoint chain that does not extend the last one) stops that job in this process.
``stop`` cancels the query a job is running (its transaction rolls back; every job is
idempotent) and joins the threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from coalition import job_record
from coalition.database import psycopg_url
from ledger.timefmt import now_us

JOB_LOCK = 727_020  # pg_try_advisory_lock's first key: scheduled jobs (second: the name)
STOP_SECONDS_MAX = 10.0
APPLICATION_NAME = "coalition scheduler"

_log = logging.getLogger("coalition.scheduler")


@dataclass(frozen=True, slots=True)
class JobResult:
    outcome: str  # "ok", or "refused": the use case said no (a rate missing, say)
    detail: str


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    interval_seconds: float
    run: Callable[[psycopg.Connection[Any]], JobResult]
    fatal: tuple[type[BaseException], ...] = ()


@dataclass(slots=True)
class _State:
    next_due: float = 0.0  # time.time() at which to look again
    conn: psycopg.Connection[Any] | None = None  # while a run is on: to cancel it
    unrecorded: Counter[str] = field(default_factory=Counter)
    stopped: bool = False  # a fatal error: not run again in this process


class Scheduler:
    def __init__(self, database_url: str, jobs: Sequence[Job]) -> None:
        assert len({j.name for j in jobs}) == len(jobs), "job names are unique"
        self._url = psycopg_url(database_url)
        self._jobs = list(jobs)
        self._states = {job.name: _State() for job in jobs}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(job,), name=f"job-{job.name}", daemon=True)
            for job in jobs
        ]

    @property
    def jobs(self) -> list[Job]:
        return list(self._jobs)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for state in self._states.values():
            conn = state.conn
            if conn is not None:
                try:
                    conn.cancel_safe(timeout=2)
                except Exception:  # the connection is closing by itself
                    _log.debug("cancelling a job's query failed", exc_info=True)
        deadline = time.monotonic() + STOP_SECONDS_MAX
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                _log.warning("job thread %s did not stop in time", thread.name)

    def attempt(self, job: Job) -> str:
        """Run ``job`` once if it is due and no other process is running it: its outcome,
        ``busy`` (running elsewhere), ``not due`` or ``stopped``."""
        state = self._states[job.name]
        if state.stopped:
            return "stopped"
        try:
            with psycopg.connect(
                self._url, autocommit=True, application_name=APPLICATION_NAME, connect_timeout=5
            ) as conn:
                state.conn = conn
                try:
                    return self._locked(job, state, conn)
                finally:
                    state.conn = None
        except Exception as exc:  # cannot connect, or the record could not be written
            if self._stop.is_set():
                return "stopped"
            _log.warning(
                "job %s: %s: %s (counted when it can be recorded)",
                job.name,
                type(exc).__name__,
                exc,
            )
            state.unrecorded["failed"] += 1
            state.next_due = time.time() + job.interval_seconds
            return "failed"

    def _locked(self, job: Job, state: _State, conn: psycopg.Connection[Any]) -> str:
        row = conn.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (JOB_LOCK, job.name)
        ).fetchone()
        if row is None or not row[0]:
            if not job_record.count_busy(conn, job.name):
                state.unrecorded["busy"] += 1
            state.next_due = time.time() + job.interval_seconds
            _log.debug("job %s is running elsewhere", job.name)
            return "busy"
        try:
            last = job_record.last_started_us(conn, job.name)
            interval_us = int(job.interval_seconds * 1_000_000)
            started_us = now_us()
            if last is not None and started_us < last + interval_us:
                state.next_due = (last + interval_us) / 1_000_000
                return "not due"
            outcome, detail = self._run(job, state, conn)
            duration_us = now_us() - started_us
            state.next_due = time.time() + job.interval_seconds
            job_record.record_run(
                conn,
                job.name,
                started_us=started_us,
                duration_us=duration_us,
                outcome=outcome,
                detail=detail,
                earlier=state.unrecorded,
            )
            state.unrecorded.clear()
            return outcome
        finally:
            if not conn.closed and not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (JOB_LOCK, job.name))

    def _run(self, job: Job, state: _State, conn: psycopg.Connection[Any]) -> tuple[str, str]:
        try:
            result = job.run(conn)
        except job.fatal as exc:
            _log.critical("job %s stopped in this process: %s", job.name, exc)
            state.stopped = True
            return "failed", f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            if self._stop.is_set():
                _log.info("job %s cancelled by the shutdown", job.name)
            else:
                _log.exception("job %s failed", job.name)
            return "failed", f"{type(exc).__name__}: {exc}"
        if result.outcome == "refused":
            _log.warning("job %s refused: %s", job.name, result.detail)
        elif result.detail:
            _log.info("job %s: %s", job.name, result.detail)
        return result.outcome, result.detail

    def _loop(self, job: Job) -> None:
        state = self._states[job.name]
        while not self._stop.is_set() and not state.stopped:
            wait = state.next_due - time.time()
            if wait > 0:
                if self._stop.wait(min(wait, job.interval_seconds)):
                    return
                continue
            self.attempt(job)

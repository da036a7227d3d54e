"""The scheduled jobs and their cadences (environment, read once at start; each in
seconds, 0 = the job is not run):

- ``checkpoint`` (``COALITION_JOB_CHECKPOINT_SECONDS``, 1): signs a checkpoint when the
  policy (``COALITION_CHECKPOINT_ENTRIES`` / ``_SECONDS``) says one is due;
- ``expiry`` (``COALITION_JOB_EXPIRY_SECONDS``, 3600): moves expired points to breakage
  (``coalition.expiry``);
- ``holds`` (``COALITION_JOB_HOLDS_SECONDS``, 60): voids holds past their expiry
  (``coalition.hold_timeout``);
- ``settle`` (``COALITION_JOB_SETTLE_SECONDS``, 3600): computes the run of the last ended
  period of ``COALITION_SETTLE_CYCLE`` (monthly, weekly or daily) if it has none;
- ``console`` (``COALITION_JOB_CONSOLE_SECONDS``, 3600): deletes console sessions that
  ended or expired a day ago and sign-in attempts past the limit's window
  (``coalition.console_prune``);
- ``verify`` (``COALITION_JOB_VERIFY_SECONDS``, 300): verifies the journal online and
  records the outcome for the auditor's page — incrementally from the last verified
  tree, at most ``COALITION_VERIFY_ENTRIES_PER_RUN`` entries a run, and in full every
  ``COALITION_VERIFY_FULL_SECONDS`` (``coalition.online_verification``);
- ``outbox`` (``COALITION_JOB_OUTBOX_SECONDS``, 3600): prunes events older than
  ``COALITION_EVENT_RETENTION_DAYS`` (30), at most 50,000 a run, telling the subscribers
  that had not received them, and delivery attempts as old (``coalition.outbox_retention``),
  and the expiry notices of holds since closed (``hold_expiry.prune_notices``);
- ``partitions`` (``COALITION_JOB_PARTITIONS_SECONDS``, 60): makes each chain's next range
  partitions, one whole range past its head (``ledger.partitions``: a range of 2^22
  entries lasts over ten minutes at the fastest append rate measured).

Period close computes only: approval is a second person's, always (docs/SETTLEMENT.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import psycopg

from coalition import hold_expiry, outbox_retention, settle, signin_limit
from coalition.checkpointer import Checkpointer
from coalition.console_prune import prune_console
from coalition.context import Coalition
from coalition.expiry import expire_points
from coalition.hold_timeout import void_expired_holds
from coalition.keys import load_signer
from coalition.online_verification import VerifyPolicy, verify_online
from coalition.outcomes import Refusal
from coalition.scheduler import Job, JobResult, Scheduler
from coalition.settings import Settings
from ledger import checkpoint_log, partitions
from ledger.checkpoint_log import CheckpointPolicy
from ledger.signed_note import Signer
from ledger.timefmt import now_us
from settlement.periods import CYCLES, last_ended

COMPUTED_BY = "scheduler"
DEFAULT_SECONDS = {
    "checkpoint": 1.0,
    "expiry": 3600.0,
    "holds": 60.0,
    "settle": 3600.0,
    "console": 3600.0,
    "verify": 300.0,
    "outbox": 3600.0,
    "partitions": 60.0,
}
RETENTION_DAYS_MAX = 3660
DEFAULT_CYCLE = "monthly"


def cadences(env: Mapping[str, str]) -> dict[str, float]:
    """Each job's interval in seconds (0: the job is not run), from the environment."""
    found = {}
    for job, default in DEFAULT_SECONDS.items():
        name = f"COALITION_JOB_{job.upper()}_SECONDS"
        text = env.get(name, "").strip()
        try:
            seconds = float(text) if text else default
        except ValueError:
            raise ValueError(f"{name} is a number of seconds (not {text!r})") from None
        if not 0 <= seconds <= 366 * 86400:
            raise ValueError(f"{name}: 0 (off) to a year of seconds (not {text!r})")
        found[job] = seconds
    return found


def settle_cycle(env: Mapping[str, str]) -> str:
    cycle = env.get("COALITION_SETTLE_CYCLE", "").strip() or DEFAULT_CYCLE
    if cycle not in CYCLES:
        raise ValueError(f"COALITION_SETTLE_CYCLE is one of {', '.join(CYCLES)} (not {cycle!r})")
    return cycle


def event_retention_days(env: Mapping[str, str]) -> int:
    """How many days the outbox keeps an event (COALITION_EVENT_RETENTION_DAYS)."""
    text = env.get("COALITION_EVENT_RETENTION_DAYS", "").strip()
    if not text:
        return outbox_retention.RETENTION_DAYS_DEFAULT
    if not text.isdigit() or not 1 <= int(text) <= RETENTION_DAYS_MAX:
        raise ValueError(
            f"COALITION_EVENT_RETENTION_DAYS is a whole number of days, 1–{RETENTION_DAYS_MAX}"
            f" (not {text!r})"
        )
    return int(text)


def scheduled_jobs(
    database_url: str, settings: Settings, signer: Signer, env: Mapping[str, str] | None = None
) -> list[Job]:
    env = os.environ if env is None else env
    every = cadences(env)
    cycle = settle_cycle(env)
    retention_days = event_retention_days(env)
    co = Coalition()
    policy = CheckpointPolicy(settings.checkpoint_entries_max, settings.checkpoint_seconds_max)
    checkpointer = Checkpointer(database_url, signer, policy)

    def checkpoint(conn: psycopg.Connection[Any]) -> JobResult:
        signed = checkpointer.tick(conn)
        return JobResult(
            "ok", "" if signed is None else f"signed a checkpoint of {signed.tree_size}"
        )

    def expiry(conn: psycopg.Connection[Any]) -> JobResult:
        expired = expire_points(co, conn, as_of_us=co.clock_us())
        detail = f"{expired.points} points expired in {expired.entries} entries"
        if expired.refused:
            detail += f"; {len(expired.refused)} left for the next run: {expired.refused[0]}"
        return JobResult("ok", detail if expired.entries or expired.refused else "")

    def holds(conn: psycopg.Connection[Any]) -> JobResult:
        done = void_expired_holds(co, conn, as_of_us=co.clock_us())
        detail = f"{done.voided} expired holds voided"
        if done.refused:
            detail += f"; {len(done.refused)} refused: {done.refused[0]}"
        return JobResult("ok", detail if done.voided or done.refused else "")

    def close_period(conn: psycopg.Connection[Any]) -> JobResult:
        return compute_last_period(co, conn, signer, cycle)

    limit = signin_limit.SigninLimit.from_env(env)

    def console(conn: psycopg.Connection[Any]) -> JobResult:
        pruned = prune_console(conn, limit, now_us())
        detail = f"pruned {pruned.sessions} console sessions, {pruned.attempts} sign-in attempts"
        if pruned.more_left:
            detail += "; more left for the next run"
        return JobResult("ok", detail if pruned.sessions or pruned.attempts else "")

    verify_policy = VerifyPolicy.from_env(env)

    def verify(conn: psycopg.Connection[Any]) -> JobResult:
        done = verify_online(conn, verify_policy, now_us(), by=COMPUTED_BY)
        if done is None:
            return JobResult("ok", "")  # a failed full run waits for its cadence
        if not done.ok:  # the job worked; what it found is a refusal to vouch
            return JobResult("refused", f"{done.kind} verification failed: {done.failure}")
        if done.kind == "incremental" and done.from_size == done.tree_size:
            return JobResult("ok", "")  # nothing new
        return JobResult("ok", f"{done.kind} verification to {done.tree_size} entries: ok")

    def prune_events(conn: psycopg.Connection[Any]) -> JobResult:
        at_us = co.clock_us()
        done = outbox_retention.prune(conn, now_us=at_us, retention_days=retention_days)
        attempts = outbox_retention.prune_attempts(
            conn, now_us=at_us, retention_days=retention_days
        )
        notices = hold_expiry.prune_notices(conn)
        if not done.deleted and not done.behind and not attempts and not notices:
            return JobResult("ok", "")
        detail = f"pruned {done.deleted} events, through seq {done.horizon_seq}"
        detail += f", {attempts} delivery attempts and {notices} notices of closed holds"
        if done.behind:
            detail += f"; behind (told, stopped until reactivated): {', '.join(done.behind)}"
        if done.more:
            detail += "; more are past the retention: the next run goes on"
        return JobResult("ok", detail)

    def make_partitions(conn: psycopg.Connection[Any]) -> JobResult:
        made = [m for m in partitions.ensure_ahead(conn) if m.ranges_made]
        detail = "; ".join(
            f"{m.chain_id}: {m.ranges_made} ranges made, through seq {m.through_seq}" for m in made
        )
        return JobResult("ok", detail)

    jobs = [
        Job(
            "checkpoint", every["checkpoint"], checkpoint, (checkpoint_log.InconsistentCheckpoint,)
        ),
        Job("expiry", every["expiry"], expiry),
        Job("holds", every["holds"], holds),
        Job("settle", every["settle"], close_period),
        Job("console", every["console"], console),
        Job("verify", every["verify"], verify),
        Job("outbox", every["outbox"], prune_events),
        Job("partitions", every["partitions"], make_partitions),
    ]
    return [job for job in jobs if job.interval_seconds > 0]


def compute_last_period(
    co: Coalition, conn: psycopg.Connection[Any], signer: Signer, cycle: str
) -> JobResult:
    """Compute the run of the latest ended period of ``cycle`` unless it has one (computed,
    approved or paid: a person takes it from there). Earlier periods left without a run
    are not computed here (``settle compute`` does that)."""
    period = last_ended(cycle, settle.timezone(), co.clock_us())
    existing = conn.execute(
        "SELECT run_id, status FROM coalition_settlement_run WHERE period = %s"
        " ORDER BY revision DESC LIMIT 1",
        (period,),
    ).fetchone()
    if existing is not None:
        return JobResult("ok", "")
    outcome = settle.compute(co, conn, signer, period=period, computed_by=COMPUTED_BY)
    if isinstance(outcome, Refusal):
        return JobResult("refused", f"period {period}: {outcome}")
    return JobResult("ok", f"computed run {outcome.run_id} of {period}, to approve")


def in_serve() -> bool:
    """Whether ``serve`` runs the scheduler too (COALITION_SCHEDULER, ``on`` by default;
    ``off`` when a ``coalition worker`` runs it instead)."""
    value = os.environ.get("COALITION_SCHEDULER", "on").strip().lower()
    if value not in ("on", "off"):
        raise ValueError(f"COALITION_SCHEDULER is on or off (not {value!r})")
    return value == "on"


def start_scheduler(url: str, settings: Settings) -> Scheduler:
    scheduler = Scheduler(url, scheduled_jobs(url, settings, load_signer(settings)))
    scheduler.start()
    return scheduler

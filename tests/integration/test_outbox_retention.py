"""Outbox retention against PostgreSQL (coalition/outbox_retention.py): the ``outbox``
job, as the app role, deletes the events past the retention — a prefix of seqs, bounded
per run — keeps the recent ones, and tells every subscriber that had not received what
it deleted, never skipping it past them in silence."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from coalition import outbox, outbox_retention, webhooks
from coalition.context import Coalition
from coalition.earn import earn_points
from coalition.jobs import cadences, event_retention_days
from coalition.seed import seed_if_empty
from coalition.webhook_delivery import DeliveryPolicy, WebhookDelivery
from coalition.webhook_secrets import WebhookKey
from coalition.webhook_urls import UrlPolicy
from ledger.timefmt import now_us
from tests.integration._world import SteppingClock, ok

KEY = WebhookKey(bytes(range(32)))
OPEN = UrlPolicy(enforced=False)  # the receivers are on loopback, as in development
DAYS = 30
DAY_US = outbox_retention.DAY_US


class _Hook:
    """A real receiver on a loopback port, answering 204 to every POST."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                hook.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture()
def hook() -> Iterator[_Hook]:
    made = _Hook()
    yield made
    made.server.shutdown()
    made.server.server_close()


@pytest.fixture()
def world(db_url: str) -> Iterator[tuple[Coalition, psycopg.Connection[Any]]]:
    """The seeded coalition, a clock a second further at each reading, and a connection
    as ``coalition_app`` — what the scheduler runs as, so its grants are what is tested."""
    seed_if_empty(db_url)
    co = Coalition(clock_us=SteppingClock(now_us()))
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET ROLE coalition_app")
        yield co, conn


def _earn(co: Coalition, conn: psycopg.Connection[Any], ref: str, partner: str = "grocer") -> int:
    """An earn; the seq of the event it raised."""
    ok(
        earn_points(
            co,
            conn,
            partner_id=partner,
            ref_key=ref,
            purchase_minor=100_000,
            currency="RUB",
            member_id="M002",
        )
    )
    return outbox.last_seq(conn)


def _kept(conn: psycopg.Connection[Any]) -> list[tuple[int, int]]:
    rows = conn.execute(
        "SELECT event_seq, occurred_us FROM coalition_event ORDER BY event_seq"
    ).fetchall()
    return [(int(s), int(t)) for s, t in rows]


def _occurred_us(conn: psycopg.Connection[Any], seq: int) -> int:
    return dict(_kept(conn))[seq]


def test_old_events_are_pruned_recent_ones_kept_and_a_run_is_bounded(world: Any) -> None:
    """Events older than the retention go, in seq order from the oldest, at most
    ``rows_max`` a run (the result says more remain); those inside it stay, untouched."""
    co, conn = world
    for i in range(3):
        _earn(co, conn, f"old-{i}")
    first_recent = _earn(co, conn, "recent-0")
    _earn(co, conn, "recent-1")
    before = _kept(conn)
    cutoff_us = _occurred_us(conn, first_recent)  # events before it are past the retention
    now = cutoff_us + DAYS * DAY_US
    old = [seq for seq, at in before if at < cutoff_us]
    assert old == list(range(1, first_recent))  # the seed's and ours: a prefix
    assert len(old) > 4
    bounded = outbox_retention.prune(conn, now_us=now, retention_days=DAYS, rows_max=3)
    assert (bounded.deleted, bounded.horizon_seq, bounded.more) == (3, 3, True)
    assert _kept(conn) == before[3:]
    rest = outbox_retention.prune(conn, now_us=now, retention_days=DAYS, batch_rows=2)
    assert rest.deleted == len(old) - 3 and not rest.more
    assert rest.horizon_seq == first_recent - 1 == outbox.horizon(conn)
    assert _kept(conn) == [e for e in before if e[1] >= cutoff_us]  # the recent ones, all
    again = outbox_retention.prune(conn, now_us=now, retention_days=DAYS)
    assert again.deleted == 0 and _kept(conn) == [e for e in before if e[1] >= cutoff_us]


def test_a_younger_event_holds_the_older_ones_after_it_back(world: Any) -> None:
    """Pruning never makes a hole: an event inside the retention stops the run, even if
    older ones follow it (their times out of order), so the horizon says exactly what
    is gone."""
    co, conn = world
    young = _earn(co, conn, "young")
    _earn(co, conn, "older-after")
    conn.execute("RESET ROLE")  # the test's owner rewrites a time: the app cannot
    conn.execute(
        "UPDATE coalition_event SET occurred_us = occurred_us - %s WHERE event_seq = %s",
        (10 * DAY_US, young + 1),
    )
    conn.execute("SET ROLE coalition_app")
    now = _occurred_us(conn, young) + DAYS * DAY_US
    done = outbox_retention.prune(conn, now_us=now, retention_days=DAYS)
    assert done.horizon_seq == young - 1
    assert [s for s, _ in _kept(conn)] == [young, young + 1]


def test_a_lagging_subscriber_is_told_and_resumes_only_when_reactivated(
    world: Any, db_url: str, hook: _Hook
) -> None:
    """A subscription that had not received pruned events of its own is marked behind,
    with which seqs it lost, and sent nothing until reactivated; the reactivation says
    them again and resumes after them. One that lost none of its own (another partner's,
    other types) has its cursor moved up and goes on."""
    co, conn = world
    losing = ok(
        webhooks.create(conn, KEY, "grocer", hook.url, ["earn.recorded"], co.clock_us(), urls=OPEN)
    )
    other = ok(
        webhooks.create(conn, KEY, "airline", hook.url, ["earn.recorded"], co.clock_us(), urls=OPEN)
    )
    lost = [_earn(co, conn, f"lost-{i}") for i in range(3)]
    kept = [_earn(co, conn, f"kept-{i}") for i in range(2)]
    now = _occurred_us(conn, kept[0]) + DAYS * DAY_US
    done = outbox_retention.prune(conn, now_us=now, retention_days=DAYS)
    assert done.behind == (losing.subscription.subscription_id,)
    assert done.horizon_seq == kept[0] - 1
    behind = ok(webhooks.get(conn, "grocer", losing.subscription.subscription_id))
    assert behind.status == "behind"
    assert (behind.pruned_first_seq, behind.pruned_last_seq, behind.pruned_events) == (
        lost[0],
        lost[-1],
        3,
    )
    assert behind.after_seq == losing.subscription.after_seq  # where it stopped
    assert behind.last_error is not None and f"seq {lost[-1]}" in behind.last_error
    moved = ok(webhooks.get(conn, "airline", other.subscription.subscription_id))
    assert (moved.status, moved.after_seq) == ("active", done.horizon_seq)
    worker = WebhookDelivery(db_url, KEY, DeliveryPolicy())
    with httpx.Client() as http:
        assert worker.deliver_due(conn, http) == 0  # behind: nothing sent, nothing skipped
        assert hook.bodies == []
        again = ok(webhooks.reactivate(conn, "grocer", losing.subscription.subscription_id))
        assert (again.status, again.after_seq) == ("active", lost[-1])
        assert again.last_error is not None
        assert f"seqs {lost[0]} to {lost[-1]}" in again.last_error and "3 of" in again.last_error
        assert worker.deliver_due(conn, http) == 2
    assert len(hook.bodies) == 2
    assert b'"ref":"kept-0"' in hook.bodies[0] and b'"ref":"kept-1"' in hook.bodies[1]


def test_a_subscription_being_delivered_to_holds_the_horizon_at_its_cursor(
    world: Any, db_url: str, hook: _Hook
) -> None:
    """While a worker holds a subscription (its advisory lock), the pruner does not judge
    its cursor — it is moving — so it prunes only up to it; the next run judges it."""
    co, conn = world
    _earn(co, conn, "before-it")
    made = ok(
        webhooks.create(conn, KEY, "grocer", hook.url, ["earn.recorded"], co.clock_us(), urls=OPEN)
    )
    cursor = made.subscription.after_seq
    lost = [_earn(co, conn, f"lost-{i}") for i in range(2)]
    recent = _earn(co, conn, "recent")
    now = _occurred_us(conn, recent) + DAYS * DAY_US
    with psycopg.connect(db_url, autocommit=True) as delivering:
        delivering.execute(
            "SELECT pg_advisory_lock(%s, hashtext(%s))",
            (webhooks.SUBSCRIPTION_LOCK, made.subscription.subscription_id),
        )
        held = outbox_retention.prune(conn, now_us=now, retention_days=DAYS)
        assert held.horizon_seq == cursor and held.behind == ()
        assert ok(webhooks.get(conn, "grocer", made.subscription.subscription_id)).status == (
            "active"
        )
        # Unlocked before the next prune: a closed connection's session lock goes only
        # when its server process has seen the close, which the next prune can outrun.
        delivering.execute(
            "SELECT pg_advisory_unlock(%s, hashtext(%s))",
            (webhooks.SUBSCRIPTION_LOCK, made.subscription.subscription_id),
        )
    done = outbox_retention.prune(conn, now_us=now, retention_days=DAYS)
    assert done.horizon_seq == recent - 1
    assert done.behind == (made.subscription.subscription_id,)
    marked = ok(webhooks.get(conn, "grocer", made.subscription.subscription_id))
    assert (marked.pruned_first_seq, marked.pruned_last_seq) == (lost[0], lost[-1])


def test_readers_below_the_horizon_get_pruned_not_a_gap(world: Any) -> None:
    """``events_since`` (the GraphQL subscription's read) answers ``Pruned`` with the
    oldest kept seq for a cursor below the horizon, and the events from it on."""
    co, conn = world
    for i in range(3):
        _earn(co, conn, f"gone-{i}")
    recent = _earn(co, conn, "here")
    now = _occurred_us(conn, recent) + DAYS * DAY_US
    horizon = outbox_retention.prune(conn, now_us=now, retention_days=DAYS).horizon_seq
    refused = outbox.events_since(conn, "grocer", horizon - 1, None, 10)
    assert refused == outbox.Pruned(horizon) and refused.oldest_seq == recent
    [got] = outbox.events_since(conn, "grocer", horizon, ["earn.recorded"], 10)  # type: ignore[misc]
    assert got.seq == recent and got.payload["ref"] == "here"
    everything = outbox_retention.prune(conn, now_us=now + DAYS * DAY_US, retention_days=DAYS)
    assert everything.horizon_seq == outbox.last_seq(conn)  # none kept: all up to the head
    assert outbox.events_since(conn, "grocer", recent - 1, None, 10) == outbox.Pruned(recent)
    assert outbox.events_since(conn, "grocer", recent, None, 10) == []


def test_the_outbox_jobs_settings() -> None:
    assert cadences({})["outbox"] == 3600.0
    assert cadences({"COALITION_JOB_OUTBOX_SECONDS": "0"})["outbox"] == 0.0
    assert event_retention_days({}) == 30
    assert event_retention_days({"COALITION_EVENT_RETENTION_DAYS": "7"}) == 7
    for bad in ("0", "-1", "1.5", "forever", "99999"):
        with pytest.raises(ValueError, match="COALITION_EVENT_RETENTION_DAYS"):
            event_retention_days({"COALITION_EVENT_RETENTION_DAYS": bad})


def test_old_delivery_attempts_go_too_recent_ones_stay(
    world: Any, db_url: str, hook: _Hook
) -> None:
    """The delivery log is bounded by the same retention: attempts made before it are
    deleted (as the app role), the oldest first and at most ``rows_max``; later ones stay."""
    co, conn = world
    made = ok(
        webhooks.create(conn, KEY, "grocer", hook.url, ["earn.recorded"], co.clock_us(), urls=OPEN)
    )
    for i in range(3):
        _earn(co, conn, f"logged-{i}")
    with httpx.Client() as http:
        assert WebhookDelivery(db_url, KEY, DeliveryPolicy()).deliver_due(conn, http) == 3
    sub_id = made.subscription.subscription_id
    times = [a.attempted_at_us for a in reversed(ok(webhooks.deliveries(conn, None, sub_id, 10)))]
    assert len(times) == 3 and times[0] < times[1] < times[2]  # one post after another
    now = times[2] + DAYS * DAY_US  # the last is just inside the retention
    assert outbox_retention.prune_attempts(conn, now_us=now, retention_days=DAYS, rows_max=1) == 1
    assert outbox_retention.prune_attempts(conn, now_us=now, retention_days=DAYS) == 1
    assert outbox_retention.prune_attempts(conn, now_us=now, retention_days=DAYS) == 0
    kept = [a.attempted_at_us for a in ok(webhooks.deliveries(conn, None, sub_id, 10))]
    assert kept == [times[2]]


def test_the_scheduled_outbox_job_prunes_as_configured(world: Any, db_url: str) -> None:
    """The job as the scheduler builds it (``jobs.scheduled_jobs``), with its retention
    from the environment: events past it are pruned and the run says how many."""
    from coalition.jobs import scheduled_jobs
    from coalition.settings import Settings
    from ledger.signed_note import Signer

    co, conn = world
    _earn(co, conn, "aged")
    conn.execute("RESET ROLE")  # the test ages the events: the app cannot rewrite them
    conn.execute("UPDATE coalition_event SET occurred_us = occurred_us - %s", (3 * DAY_US,))
    conn.execute("SET ROLE coalition_app")
    _earn(co, conn, "fresh")
    signer = Signer.from_seed("ledger.retention.example", bytes(32))
    env = {"COALITION_EVENT_RETENTION_DAYS": "2"}
    [job] = [
        j for j in scheduled_jobs(db_url, Settings.from_env(), signer, env) if j.name == "outbox"
    ]
    assert job.interval_seconds == 3600.0
    total = outbox.last_seq(conn)
    result = job.run(conn)
    assert result.outcome == "ok"
    assert result.detail.startswith(f"pruned {total - 1} events, through seq {total - 1}")
    assert [s for s, _ in _kept(conn)] == [total]

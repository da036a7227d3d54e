"""The outbox against PostgreSQL: an event exists exactly when its fact committed (on a
plain append, through the thread group committer's pipelined stream, in a settlement
run's transaction, for a checkpoint), seqs in commit order without gaps, and each event
names only the partner whose data it is about."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from coalition import hold_expiry, outbox, settle
from coalition.context import Coalition
from coalition.earn import earn_points
from coalition.outcomes import Refusal, RefusalCode
from coalition.redeem import authorise, capture
from coalition.seed import seed_if_empty
from ledger import checkpoint_log
from ledger.group_commit import GroupCommitter
from ledger.journal import Appended
from ledger.signed_note import Signer
from ledger.timefmt import now_us


def _events(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT event_seq, partner_id, event_type, payload FROM coalition_event ORDER BY event_seq"
    ).fetchall()


def _earn(co: Coalition, conn: psycopg.Connection[Any], ref: str, partner: str = "grocer") -> Any:
    return earn_points(
        co,
        conn,
        partner_id=partner,
        ref_key=ref,
        purchase_minor=100_000,
        currency="RUB",
        member_id="M002",
    )


def test_an_event_commits_and_rolls_back_with_its_entry(db_url: str) -> None:
    seed_if_empty(db_url)
    co = Coalition()
    with psycopg.connect(db_url, autocommit=True) as conn:
        before = _events(conn)
        assert [e[0] for e in before] == list(range(1, len(before) + 1))  # no gaps
        with conn.transaction():
            earned = _earn(co, conn, "rolled-back")
            assert not isinstance(earned, Refusal)
            assert len(_events(conn)) == len(before) + 1  # written with it, in its transaction
            raise psycopg.Rollback()
        assert _events(conn) == before
        assert outbox.last_seq(conn) == len(before)  # the seq given back, no gap
        earned = _earn(co, conn, "kept")
        assert not isinstance(earned, Refusal)
        [(seq, partner, kind, payload)] = _events(conn)[len(before) :]
        assert (seq, partner, kind) == (len(before) + 1, "grocer", "earn.recorded")
        assert payload["entry_seq"] == earned.seq and payload["ref"] == "kept"
        assert "input" not in payload
        replay = _earn(co, conn, "kept")  # an idempotent retry: no second event
        assert not isinstance(replay, Refusal) and replay.replayed
        assert len(_events(conn)) == len(before) + 1


class _Capture(Coalition):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Any] = []

    def append_once(self, conn: Any, request: Any) -> Any:
        self.requests.append(request)
        return Refusal(RefusalCode.INVALID_REQUEST, "captured, not appended")


def test_the_pipelined_group_committer_writes_each_batchs_events_in_order(db_url: str) -> None:
    seed_if_empty(db_url)
    co = Coalition()
    with psycopg.connect(db_url, autocommit=True) as conn:
        start = outbox.last_seq(conn)
        capture = _Capture()
        for i in range(60):  # each request as the use case builds it, not appended
            _earn(capture, conn, f"stream-{i}", "grocer" if i % 2 else "airline")
        requests = capture.requests
    committer = GroupCommitter(lambda: psycopg.connect(db_url, autocommit=True), co.journal, 16)
    try:
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(committer.submit, requests))
    finally:
        committer.close()
    assert all(isinstance(r, Appended) for r in results), results
    with psycopg.connect(db_url, autocommit=True) as conn:
        events = [e for e in _events(conn) if e[0] > start]
    assert [e[0] for e in events] == list(range(start + 1, start + 61))
    by_entry = {e[3]["entry_seq"]: e for e in events}
    assert sorted(by_entry) == sorted(r.seq for r in results if isinstance(r, Appended))
    # Seq order is the journal's order: the outbox was written in each batch's transaction.
    assert [e[3]["entry_seq"] for e in events] == sorted(by_entry)
    for request, result in zip(requests, results, strict=True):
        assert isinstance(result, Appended)
        assert by_entry[result.seq][1] == request.meta["partner"]


def test_checkpoints_and_settlement_runs_announce_themselves(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_if_empty(db_url)
    monkeypatch.setattr(settle, "_period_over", lambda co, end_us: True)
    co = Coalition()
    signer = Signer.from_seed("ledger.outbox.example", bytes(32))
    with psycopg.connect(db_url, autocommit=True) as conn:
        start = outbox.last_seq(conn)
        stored = checkpoint_log.sign_now(conn, signer, now_us())
        [(_, partner, kind, payload)] = [e for e in _events(conn) if e[0] > start]
        assert (partner, kind) == (None, "checkpoint.signed")
        assert payload["tree_size"] == stored.tree_size
        assert payload["root_hash"] == stored.root_hash.hex()
        start = outbox.last_seq(conn)
        from datetime import datetime
        from zoneinfo import ZoneInfo

        today = datetime.now(ZoneInfo(settle.timezone())).date()
        run = settle.compute(
            co, conn, signer, period=f"{today.year:04d}-{today.month:02d}", computed_by="a"
        )
        assert not isinstance(run, Refusal), run
        computed = [e for e in _events(conn) if e[0] > start and e[2] != "checkpoint.signed"]
        assert {e[2] for e in computed} == {"settlement_run.computed"}
        parties = {e[1] for e in computed}
        assert parties and None not in parties and "coalition" not in parties
        assert all(
            e[3] == {"run": run.run_id, "period": run.period, "revision": 1} for e in computed
        )
        start = outbox.last_seq(conn)
        approved = settle.approve(co, conn, run.run_id, "b")
        assert not isinstance(approved, Refusal), approved
        kinds = [e[2] for e in _events(conn) if e[0] > start]
        assert "settlement_run.approved" in kinds and "settlement_run.computed" not in kinds
        start = outbox.last_seq(conn)
        refused = settle.approve(co, conn, run.run_id, "c")  # refused: nothing announced
        assert isinstance(refused, Refusal)
        assert outbox.last_seq(conn) == start


def test_an_expired_hold_is_announced_once_and_a_captured_one_never(db_url: str) -> None:
    seed_if_empty(db_url)
    now = {"us": now_us()}
    co = Coalition(clock_us=lambda: now["us"])
    with psycopg.connect(db_url, autocommit=True) as conn:
        lapsing = authorise(
            co,
            conn,
            partner_id="airline",
            ref_key="lapse",
            points=5,
            member_id="M003",
            hold_seconds=1,
        )
        taken = authorise(
            co,
            conn,
            partner_id="airline",
            ref_key="take",
            points=5,
            member_id="M003",
            hold_seconds=1,
        )
        assert not isinstance(lapsing, Refusal) and not isinstance(taken, Refusal)
        assert not isinstance(
            capture(
                co, conn, partner_id="airline", ref_key="cap", hold_seq=taken.hold_seq, points=5
            ),
            Refusal,
        )
        start = outbox.last_seq(conn)
        assert hold_expiry.sweep(conn, now["us"]) == 0  # not expired yet
        later = now["us"] + 2_000_000 + hold_expiry.CLOCK_SKEW_SECONDS * 1_000_000
        assert hold_expiry.sweep(conn, later) == 1
        [(_, partner, kind, payload)] = [e for e in _events(conn) if e[0] > start]
        assert (partner, kind) == ("airline", "hold.expired")
        assert payload == {"hold": lapsing.hold_seq, "ref": "lapse", "member": "M003", "points": 5}
        assert hold_expiry.sweep(conn, later) == 0  # once
        now["us"] = later  # and it can no longer be captured
        late = capture(
            co, conn, partner_id="airline", ref_key="late", hold_seq=lapsing.hold_seq, points=5
        )
        assert isinstance(late, Refusal) and late.code is RefusalCode.HOLD_EXPIRED


def _lapsed_hold(
    conn: psycopg.Connection[Any], ref: str, points: int, after_us: int = 0
) -> tuple[Coalition, Any, int]:
    """An airline hold of 1 s on M003 (placed now, or at ``after_us`` if later), and a
    coalition whose clock now stands past its expiry and the sweep's skew: (coalition,
    hold, that time)."""
    now = {"us": max(now_us(), after_us)}
    co = Coalition(clock_us=lambda: now["us"])
    hold = authorise(
        co,
        conn,
        partner_id="airline",
        ref_key=ref,
        points=points,
        member_id="M003",
        hold_seconds=1,
    )
    assert not isinstance(hold, Refusal)
    now["us"] += 2_000_000 + hold_expiry.CLOCK_SKEW_SECONDS * 1_000_000
    return co, hold, now["us"]


def test_a_hold_the_holds_job_timed_out_is_announced_expired_too(db_url: str) -> None:
    """The scheduler's hold time-out (a void of kind hold_timeout, no partner in it) may
    close an expired hold before the event sweep sees it: the partner is told all the
    same, once."""
    from coalition.hold_timeout import void_expired_holds

    seed_if_empty(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        co, hold, later = _lapsed_hold(conn, "lapse-2", 5)
        start = outbox.last_seq(conn)
        assert void_expired_holds(co, conn, as_of_us=later).voided == 1
        # Announced by the void's own transaction: not by the sweep, which reads only
        # active holds, and never twice.
        announced = [e for e in _events(conn) if e[0] > start]
        [(_, partner, kind, payload)] = announced
        assert (partner, kind, payload["hold"]) == ("airline", "hold.expired", hold.hold_seq)
        assert payload["ref"] == "lapse-2" and payload["points"] == 5
        assert hold_expiry.sweep(conn, later) == 0
        assert void_expired_holds(co, conn, as_of_us=later).voided == 0
        assert [e for e in _events(conn) if e[0] > start] == announced


def test_a_hold_the_sweep_announced_is_not_announced_again_by_its_time_out(
    db_url: str,
) -> None:
    from coalition.hold_timeout import void_expired_holds

    seed_if_empty(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        co, hold, later = _lapsed_hold(conn, "lapse-3", 4)
        start = outbox.last_seq(conn)
        assert hold_expiry.sweep(conn, later) == 1
        assert void_expired_holds(co, conn, as_of_us=later).voided == 1
        expired = [e for e in _events(conn) if e[0] > start and e[2] == "hold.expired"]
        assert [e[3]["hold"] for e in expired] == [hold.hold_seq]


def _notices(conn: psycopg.Connection[Any]) -> set[int]:
    rows = conn.execute("SELECT hold_seq FROM coalition_hold_expiry_notice").fetchall()
    return {int(r[0]) for r in rows}


def test_the_notices_of_closed_holds_are_forgotten_and_nothing_is_announced_again(
    db_url: str,
) -> None:
    """As the application's role (the grant of migration 0023): the outbox job's prune
    forgets a notice once its hold is voided, keeps the notice of an expired hold still
    open, and neither the sweep nor the time-out announces anything a second time."""
    from coalition.hold_timeout import void_expired_holds

    seed_if_empty(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET ROLE coalition_app")
        start = outbox.last_seq(conn)
        co, closed, later = _lapsed_hold(conn, "lapse-4", 3)
        assert hold_expiry.sweep(conn, later) == 1  # announced; a notice is kept
        assert void_expired_holds(co, conn, as_of_us=later).voided == 1
        co, still_open, later = _lapsed_hold(conn, "lapse-5", 2, after_us=later)
        assert hold_expiry.sweep(conn, later) == 1  # expired, not yet voided
        assert {closed.hold_seq, still_open.hold_seq} <= _notices(conn)
        assert hold_expiry.prune_notices(conn) == 1
        assert closed.hold_seq not in _notices(conn)
        assert still_open.hold_seq in _notices(conn)
        assert hold_expiry.sweep(conn, later) == 0  # the open one stays announced
        assert void_expired_holds(co, conn, as_of_us=later).voided == 1
        assert hold_expiry.prune_notices(conn) == 1 and not _notices(conn) & {
            closed.hold_seq,
            still_open.hold_seq,
        }
        assert hold_expiry.sweep(conn, later) == 0
        expired = [e for e in _events(conn) if e[0] > start and e[2] == "hold.expired"]
        assert sorted(e[3]["hold"] for e in expired) == [closed.hold_seq, still_open.hold_seq]


def test_the_app_role_may_do_everything_events_need(db_url: str) -> None:
    """As ``coalition_app`` (what deployments log in as): an earn with its event, a
    checkpoint and its trigger, a subscription, a hold sweep, and a delivery attempt
    logged — every grant migration 0010 makes is used, none is missing."""
    import http.server
    import threading

    import httpx

    from coalition import webhooks
    from coalition.webhook_delivery import DeliveryPolicy, WebhookDelivery
    from coalition.webhook_secrets import WebhookKey
    from coalition.webhook_urls import UrlPolicy

    seed_if_empty(db_url)
    received: list[bytes] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    key = WebhookKey(bytes(range(32)))
    try:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("SET ROLE coalition_app")
            url = f"http://127.0.0.1:{server.server_address[1]}/"
            made = webhooks.create(
                conn,
                key,
                "grocer",
                url,
                ["earn.recorded"],
                now_us(),
                urls=UrlPolicy(enforced=False),
            )
            assert not isinstance(made, Refusal), made
            assert not isinstance(_earn(Coalition(), conn, "as-app"), Refusal)
            checkpoint_log.sign_now(conn, Signer.from_seed("ledger.app.example", bytes(32)), 1)
            hold_expiry.sweep(conn, now_us())
            worker = WebhookDelivery(db_url, key, DeliveryPolicy())
            with httpx.Client() as http:
                assert worker.deliver_due(conn, http) == 1
            [logged] = webhooks.deliveries(conn, "grocer", made.subscription.subscription_id, 5)
            assert logged.delivered and logged.status_code == 204
    finally:
        server.shutdown()
        server.server_close()
    assert len(received) == 1 and b'"ref":"as-app"' in received[0]


def _run_events(conn: psycopg.Connection[Any], after_seq: int) -> list[tuple[Any, ...]]:
    return [e for e in _events(conn) if e[0] > after_seq and e[2] != "checkpoint.signed"]


def test_a_paid_run_and_a_corrections_revision_are_announced_to_each_party_alone(
    db_url: str,
) -> None:
    """``settlement_run.paid`` is written once, in the transaction of the confirmation
    that makes the run paid (not before, not on a replayed confirmation), to each party
    of its payments; a correction's new revision raises ``settlement_run.computed`` and
    ``statement.revised`` to each party of the run, payload the run, period and
    revision. Each event names one party, never the operator; a party's own read of the
    outbox gets its own events only."""
    from decimal import Decimal

    from coalition.earning import EarningRules
    from coalition.members import enroll_member
    from coalition.partners import onboard_partner, publish_earning_rules, publish_terms
    from coalition.redeem import redeem_points
    from ledger.timefmt import parse_time_us
    from settlement.terms import PartnerTerms
    from tests.integration._world import SteppingClock, ok, pay_all

    def terms(rate: str) -> PartnerTerms:
        return PartnerTerms(
            Decimal(50), Decimal(rate), 100, Decimal("0.5"), "monthly", "multilateral"
        )

    co = Coalition(clock_us=SteppingClock(1_800_000_000_000_000))  # 2027-01-15
    signer = Signer.from_seed("ledger.outbox.example", bytes(32))
    banks = {"grocer": "DE89370400440532013000", "airline": "DE02120300000000202051"}
    with psycopg.connect(db_url, autocommit=True) as conn:
        for partner, iban in banks.items():
            ok(onboard_partner(co, conn, partner, partner.title(), "EUR"))
            ok(publish_terms(co, conn, partner, terms("95"), 0, f"terms-{partner}"))
            rules = EarningRules("EUR", 1, 100)
            ok(publish_earning_rules(co, conn, partner, rules, 0, f"rules-{partner}"))
            ok(
                settle.set_bank_account(
                    co, conn, partner, iban=iban, bic="COBADEFFXXX", name=partner, ref_key=iban
                )
            )
        ok(enroll_member(co, conn, "M1"))
        earned = earn_points(
            co,
            conn,
            partner_id="grocer",
            ref_key="g1",
            purchase_minor=50_000,
            currency="EUR",
            member_id="M1",
        )
        ok(earned)
        ok(redeem_points(co, conn, partner_id="airline", ref_key="a1", points=300, member_id="M1"))
        co.clock_us.at(parse_time_us("2027-01-31T21:00:00.000000Z"))  # type: ignore[attr-defined]

        def january(**kwargs: Any) -> Any:
            return ok(settle.compute(co, conn, signer, period="2027-01", computed_by="a", **kwargs))

        first = january()
        ok(settle.approve(co, conn, first.run_id, "b"))
        payments = json.loads(settle.get_run(conn, first.run_id).run_bytes)["payments"]
        payers = {who for p in payments for who in (p["payer"], p["payee"])} - {"coalition"}
        assert payers == {"grocer", "airline"} and len(payments) >= 2
        start = outbox.last_seq(conn)
        *early, last = payments
        for payment in early:
            ok(settle.confirm_payment(co, conn, first.run_id, payment["end_to_end_id"], "f"))
        assert _run_events(conn, start) == []  # not paid until every payment is
        ok(settle.confirm_payment(co, conn, first.run_id, last["end_to_end_id"], "f"))
        paid = _run_events(conn, start)
        assert sorted((e[1], e[2]) for e in paid) == [
            ("airline", "settlement_run.paid"),
            ("grocer", "settlement_run.paid"),
        ]
        assert all(e[3] == {"run": "2027-01", "period": "2027-01", "revision": 1} for e in paid)
        again = settle.confirm_payment(co, conn, first.run_id, last["end_to_end_id"], "f")
        assert ok(again).replayed and _run_events(conn, start) == paid  # announced once

        ok(publish_terms(co, conn, "airline", terms("100"), 0, "terms-airline-2"))
        start = outbox.last_seq(conn)
        second = january(correction=True)
        revised = _run_events(conn, start)
        assert sorted((e[1], e[2]) for e in revised) == [
            ("airline", "settlement_run.computed"),
            ("airline", "statement.revised"),
            ("grocer", "settlement_run.computed"),
            ("grocer", "statement.revised"),
        ]
        data = {"run": second.run_id, "period": "2027-01", "revision": 2}
        assert second.run_id == "2027-01-r2" and all(e[3] == data for e in revised)
        for party in ("grocer", "airline"):
            own = outbox.events_for(conn, party, start, ["statement.revised"], 10)
            assert [(e.partner_id, e.payload) for e in own] == [(party, data)]
        start = outbox.last_seq(conn)
        ok(settle.approve(co, conn, second.run_id, "b"))
        pay_all(co, conn, second.run_id, "f")
        kinds = sorted((e[1], e[2], e[3]["revision"]) for e in _run_events(conn, start))
        assert kinds == [
            ("airline", "settlement_run.approved", 2),
            ("airline", "settlement_run.paid", 2),
            ("grocer", "settlement_run.approved", 2),
            ("grocer", "settlement_run.paid", 2),
        ]

"""Webhooks end to end: the real app and a real receiver on loopback ports, the delivery
worker as its own process (``coalition webhooks deliver``) or in-process.

- every event reaches its subscriber exactly once after de-duplication by id, in seq
  order, across a ``kill -9`` of the worker while the receiver holds a delivery;
- a partner never receives another partner's event;
- every delivery's signature verifies with the sample verifier of docs/WEBHOOKS.md, and
  a tampered body or a wrong secret is refused by it;
- a failing endpoint is retried with growing delays, marked failing after the bounded
  number of attempts, logged, and delivered to from where it stopped once reactivated.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from starlette.applications import Starlette

from coalition.api.app import create_app
from coalition.settings import Settings
from coalition.webhook_delivery import DeliveryPolicy, WebhookDelivery
from coalition.webhook_secrets import load_webhook_key
from tests.e2e._receiver import Received, Receiver, sample_verifier
from tests.e2e.test_payable import Api

if TYPE_CHECKING:
    from tests.e2e.conftest import Seeded

WEBHOOK_KEY = base64.b64encode(hashlib.sha256(b"coalition e2e webhook key").digest()).decode()
WAIT_SECONDS_MAX = 60
COALITION = Path(sys.executable).parent / "coalition"


@pytest.fixture()
def hook_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, webhook_key_text=WEBHOOK_KEY)


@pytest.fixture()
def call(
    seeded: Seeded, hook_settings: Settings, serve: Callable[[Starlette], str]
) -> Iterator[Api]:
    caller = Api(serve(create_app(hook_settings, seeded.db_url)), seeded.keys)
    yield caller
    caller.client.close()


@pytest.fixture()
def receivers() -> Iterator[Callable[[], Receiver]]:
    made: list[Receiver] = []

    def make() -> Receiver:
        made.append(Receiver())
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def subscribe(call: Api, who: str, url: str, types: list[str]) -> dict[str, Any]:
    data = call(who, "partner/CreateWebhookSubscription", url=url, eventTypes=types)
    created: dict[str, Any] = data["createWebhookSubscription"]
    assert created["__typename"] == "CreatedWebhookSubscription", created
    assert created["secret"].startswith("whsec_")
    return created


def earn(call: Api, who: str, reference: str, member: str) -> None:
    data = call(
        who,
        "partner/PostPurchase",
        reference=reference,
        member={"memberId": member},
        purchaseMinor="150000",
        currency="RUB",
    )
    assert data["earn"]["__typename"] == "Earned", data


def redeem(call: Api, who: str, reference: str, member: str) -> None:
    data = call(
        who, "partner/RedeemAtTill", reference=reference, member={"memberId": member}, points="1"
    )
    assert data["redeem"]["__typename"] == "Redeemed", data


def outbox_ids(db_url: str, partner: str, types: list[str], after_seq: int) -> list[str]:
    """The partner's events since its subscription began, as the outbox holds them."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT event_id::text FROM coalition_event WHERE partner_id = %s"
            " AND event_type = ANY(%s) AND event_seq > %s ORDER BY event_seq",
            (partner, types, after_seq),
        ).fetchall()
    return [r[0] for r in rows]


def wait_for(what: str, done: Callable[[], bool], seen: Callable[[], object] = list) -> None:
    deadline = time.monotonic() + WAIT_SECONDS_MAX
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}; saw {seen()}"
        time.sleep(0.05)


def first_seen(received: list[Received]) -> list[str]:
    seen: list[str] = []
    for r in received:
        if r.event["id"] not in seen:
            seen.append(r.event["id"])
    return seen


def worker(db_url: str) -> subprocess.Popen[bytes]:
    env = os.environ | {"DATABASE_URL": db_url, "COALITION_WEBHOOK_KEY": WEBHOOK_KEY}
    return subprocess.Popen(
        [
            str(COALITION),
            "webhooks",
            "deliver",
            "--poll-seconds",
            "0.05",
            "--backoff-seconds",
            "0.1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )


def test_every_event_once_after_dedup_across_a_kill_9_and_only_the_partners_own(
    call: Api, seeded: Seeded, receivers: Callable[[], Receiver]
) -> None:
    grocer_hook, airline_hook = receivers(), receivers()
    types = ["earn.recorded", "redemption.recorded"]
    grocer = subscribe(call, "grocer", grocer_hook.url, types)
    airline = subscribe(call, "airline", airline_hook.url, types)
    for i in range(12):
        earn(call, "grocer", f"kill-earn-{i}", f"M00{i % 5 + 1}")
        if i % 4 == 0:
            redeem(call, "airline", f"kill-redeem-{i}", "M001")
    expected = outbox_ids(seeded.db_url, "grocer", types, grocer["subscription"]["afterSeq"])
    assert len(expected) == 12
    held, release = threading.Event(), threading.Event()
    target = expected[6]

    def hold_the_seventh(r: Received) -> int:
        if r.event["id"] == target and not held.is_set():
            held.set()  # the worker is mid-delivery: it posted, we have not answered
            release.wait(WAIT_SECONDS_MAX)
        return 200

    grocer_hook.answer = hold_the_seventh
    first = worker(seeded.db_url)
    try:
        assert held.wait(WAIT_SECONDS_MAX), "the worker never reached the seventh event"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        release.set()
        if first.poll() is None:
            first.kill()
    assert len(first_seen(grocer_hook.received)) == 7  # nothing after the held event
    second = worker(seeded.db_url)
    try:
        wait_for(
            "every grocer event",
            lambda: len(first_seen(grocer_hook.received)) == 12,
            lambda: [r.event["seq"] for r in grocer_hook.received],
        )
        # At least once: if the kill fell inside an airline delivery, that one comes again.
        wait_for(
            "every airline event",
            lambda: len(first_seen(airline_hook.received)) == 3,
            lambda: [r.event["seq"] for r in airline_hook.received],
        )
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    # Exactly once after de-duplication, in seq order; the held event came twice.
    assert first_seen(grocer_hook.received) == expected
    ids = [r.event["id"] for r in grocer_hook.received]
    assert [i for i in set(ids) if ids.count(i) > 1] == [target]
    seqs = [r.event["seq"] for r in grocer_hook.received]
    assert seqs == sorted(seqs)
    # Each partner got only its own events.
    assert {r.event["partner"] for r in grocer_hook.received} == {"grocer"}
    assert first_seen(airline_hook.received) == outbox_ids(
        seeded.db_url, "airline", types, airline["subscription"]["afterSeq"]
    )
    assert {r.event["partner"] for r in airline_hook.received} == {"airline"}
    # Every delivery signed with its own subscription's secret, as the docs' verifier says.
    verify = sample_verifier()
    for hook, sub, other in ((grocer_hook, grocer, airline), (airline_hook, airline, grocer)):
        for r in hook.received:
            header = r.headers["Coalition-Signature"]
            assert verify(sub["secret"], header, r.body)
            assert not verify(other["secret"], header, r.body)
            assert r.headers["Coalition-Event-Id"] == r.event["id"]


def test_a_tampered_body_is_refused_by_the_sample_verifier(
    call: Api, seeded: Seeded, hook_settings: Settings, receivers: Callable[[], Receiver]
) -> None:
    hook = receivers()
    sub = subscribe(call, "grocer", hook.url, ["earn.recorded"])
    earn(call, "grocer", "tamper-1", "M002")
    delivery = WebhookDelivery(seeded.db_url, load_webhook_key(hook_settings), _fast(3), 1)
    delivery.start()
    try:
        wait_for("a delivery", lambda: len(hook.received) == 1)
    finally:
        delivery.stop()
    [got] = hook.received
    verify = sample_verifier()
    header = got.headers["Coalition-Signature"]
    assert verify(sub["secret"], header, got.body)
    assert got.event["data"]["ref"] == "tamper-1" and got.event["data"]["member"] == "M002"
    tampered = got.body.replace(b'"points":', b'"points":9')
    assert tampered != got.body
    assert not verify(sub["secret"], header, tampered)
    assert not verify(sub["secret"], header, got.body + b" ")
    stamp = int(header.split(",")[0].removeprefix("t="))
    assert not verify(sub["secret"], header.replace(f"t={stamp}", f"t={stamp + 1}"), got.body)
    assert not verify(sub["secret"], header, got.body, now=stamp + 301)  # a replay, late


def _fast(attempts: int) -> DeliveryPolicy:
    return DeliveryPolicy(attempts_max=attempts, backoff_base_seconds=0.4, poll_seconds=0.02)


def test_a_failing_endpoint_backs_off_is_marked_failing_and_resumes_when_reactivated(
    call: Api, seeded: Seeded, hook_settings: Settings, receivers: Callable[[], Receiver]
) -> None:
    hook = receivers()
    hook.answer = lambda r: 500
    sub = subscribe(call, "grocer", hook.url, ["earn.recorded"])["subscription"]
    earn(call, "grocer", "failing-1", "M003")
    earn(call, "grocer", "failing-2", "M003")
    delivery = WebhookDelivery(seeded.db_url, load_webhook_key(hook_settings), _fast(4), 2)
    delivery.start()
    try:

        def status() -> dict[str, Any]:
            [found] = call("grocer", "partner/WebhookSubscriptions")["webhookSubscriptions"]
            return dict(found)

        wait_for("the endpoint marked failing", lambda: status()["status"] == "failing")
        failing = status()
        assert failing["attempts"] == 4 and failing["lastError"] == "HTTP 500"
        assert failing["afterSeq"] == sub["afterSeq"]  # nothing acknowledged, nothing skipped
        time.sleep(1.0)
        assert len(hook.received) == 4  # left alone once failing
        log = call("grocer", "partner/WebhookDeliveries", id=sub["id"])["webhookDeliveries"]
        attempts = list(reversed(log["attempts"]))
        assert [a["attempt"] for a in attempts] == [1, 2, 3, 4]
        assert {a["eventId"] for a in attempts} == {hook.received[0].event["id"]}
        assert all(a["statusCode"] == 500 and not a["delivered"] for a in attempts)
        # Backoff: after the n-th failure, between d/2 and d (plus polling), d = 0.4·2^(n−1).
        sent = list(hook.received)
        times = _attempt_times(seeded.db_url, sub["id"])
        for n, (before, after) in enumerate(itertools.pairwise(times), start=1):
            delay = 0.4 * 2 ** (n - 1)
            assert delay / 2 - 0.01 <= after - before <= delay + 0.5, (n, after - before)
        assert len(sent) == 4
        hook.answer = lambda r: 200
        again = call("grocer", "partner/ReactivateWebhookSubscription", id=sub["id"])
        assert again["reactivateWebhookSubscription"]["status"] == "active"
        wait_for("both events delivered", lambda: len(first_seen(hook.received)) == 2)
        wait_for(
            "the cursor moved",
            lambda: status()["attempts"] == 0 and status()["afterSeq"] > sub["afterSeq"],
        )
    finally:
        delivery.stop()
    refs = [hook.received[0].event["data"]["ref"], hook.received[-1].event["data"]["ref"]]
    assert refs == ["failing-1", "failing-2"]
    other = call("airline", "partner/WebhookDeliveries", id=sub["id"])["webhookDeliveries"]
    assert other["code"] == "UNKNOWN_SUBSCRIPTION"  # another partner's is not there


def _attempt_times(db_url: str, subscription_id: str) -> list[float]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT attempted_at_us FROM coalition_webhook_delivery WHERE subscription_id = %s"
            " ORDER BY delivery_id",
            (subscription_id,),
        ).fetchall()
    return [r[0] / 1e6 for r in rows]


def test_subscriptions_refuse_bad_input_and_other_partners_typed(call: Api) -> None:
    bad = call(
        "grocer", "partner/CreateWebhookSubscription", url="ftp://x/", eventTypes=["earn.recorded"]
    )["createWebhookSubscription"]
    assert bad["code"] == "INVALID_REQUEST" and "url" in bad["message"]
    bad = call(
        "grocer", "partner/CreateWebhookSubscription", url="https://x/", eventTypes=["nope.nope"]
    )["createWebhookSubscription"]
    assert bad["code"] == "INVALID_REQUEST" and "nope.nope" in bad["message"]
    made = subscribe(call, "grocer", "https://example.invalid/hook", ["checkpoint.signed"])
    theirs = call("airline", "partner/DeleteWebhookSubscription", id=made["subscription"]["id"])
    assert theirs["deleteWebhookSubscription"]["code"] == "UNKNOWN_SUBSCRIPTION"
    assert call("airline", "partner/WebhookSubscriptions")["webhookSubscriptions"] == []
    mine = call("grocer", "partner/DeleteWebhookSubscription", id=made["subscription"]["id"])
    assert mine["deleteWebhookSubscription"]["status"] == "deleted"
    assert call("grocer", "partner/WebhookSubscriptions")["webhookSubscriptions"] == []
    body = call.raw("auditor", "partner/WebhookSubscriptions")
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"

"""The webhook address policy end to end: the app with production settings under
uvicorn, a real receiver on a loopback port, the delivery worker against the database.

- a subscription to a loopback, link-local or plain-http URL is refused over GraphQL
  with ``URL_NOT_ALLOWED`` (the union's ``UrlNotAllowed``), and nothing is written;
- the operator's allowlist (``COALITION_WEBHOOK_ALLOW_HOSTS``) lets a loopback receiver
  be subscribed and delivered to;
- a delivery whose host now resolves to a refused address (the allowlist gone, as if
  DNS had changed under a checked name) is logged as refused and never sent: the
  receiver sees no request, while the same worker with the allowlist delivers it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette

from coalition import webhooks
from coalition.api.app import create_app
from coalition.outcomes import Refusal
from coalition.settings import Settings
from coalition.webhook_delivery import DeliveryPolicy, WebhookDelivery
from coalition.webhook_secrets import load_webhook_key
from coalition.webhook_urls import UrlPolicy, url_policy
from ledger.timefmt import now_us
from tests.e2e._receiver import Receiver
from tests.e2e._tls import make_tls
from tests.e2e.test_payable import Api
from tests.e2e.test_webhooks import WEBHOOK_KEY, earn

if TYPE_CHECKING:
    from tests.e2e.conftest import Seeded


@pytest.fixture()
def production(settings: Settings) -> Settings:
    return dataclasses.replace(settings, development=False, webhook_key_text=WEBHOOK_KEY)


@pytest.fixture()
def allowing(production: Settings) -> Settings:
    return dataclasses.replace(production, webhook_allow_hosts="localhost")


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


def _api(serve: Callable[[Starlette], str], settings: Settings, seeded: Seeded) -> Api:
    return Api(serve(create_app(settings, seeded.db_url)), seeded.keys)


def _create(call: Api, url: str) -> dict[str, str]:
    data = call(
        "grocer", "partner/CreateWebhookSubscription", url=url, eventTypes=["earn.recorded"]
    )
    return dict(data["createWebhookSubscription"])


def test_production_refuses_internal_and_plain_http_urls_typed(
    seeded: Seeded,
    production: Settings,
    serve: Callable[[Starlette], str],
    receiver: Receiver,
) -> None:
    call = _api(serve, production, seeded)
    try:
        local = receiver.url.replace("127.0.0.1", "localhost")
        for url, says in (
            (receiver.url, "url: 127.0.0.1 is a loopback address"),
            (local, "localhost is 127.0.0.1, a loopback address"),  # resolved, then judged
            ("https://169.254.169.254/latest/meta-data/", "link-local"),
            ("https://10.0.0.1/hook", "private"),
            ("http://8.8.8.8/hook", "https only"),
        ):
            refused = _create(call, url)
            assert refused["__typename"] == "UrlNotAllowed", (url, refused)
            assert refused["code"] == "URL_NOT_ALLOWED" and says in refused["message"], refused
        assert call("grocer", "partner/WebhookSubscriptions")["webhookSubscriptions"] == []
        earn(call, "grocer", "ssrf-none", "M001")
    finally:
        call.client.close()
    assert receiver.received == []


def test_a_delivery_to_a_refused_address_is_logged_and_not_sent(
    seeded: Seeded,
    allowing: Settings,
    production: Settings,
    serve: Callable[[Starlette], str],
    receiver: Receiver,
) -> None:
    call = _api(serve, allowing, seeded)
    try:
        made = _create(call, receiver.url.replace("127.0.0.1", "localhost"))
        assert made["__typename"] == "CreatedWebhookSubscription", made
        sub_id = made["subscription"]["id"]  # type: ignore[index]
        earn(call, "grocer", "ssrf-1", "M001")
        key = load_webhook_key(production)
        with psycopg.connect(seeded.db_url, autocommit=True) as conn, httpx.Client() as http:
            # The allowlist gone: localhost is judged by its address again, and refused.
            strict = WebhookDelivery(
                seeded.db_url, key, DeliveryPolicy(), urls=url_policy(production)
            )
            assert strict.deliver_due(conn, http) == 1
            assert receiver.received == []  # no request reached it
            log = call("grocer", "partner/WebhookDeliveries", id=sub_id)["webhookDeliveries"]
            [attempt] = log["attempts"]
            assert not attempt["delivered"] and attempt["statusCode"] is None
            assert attempt["error"].startswith("refused: url: localhost is 127.0.0.1"), attempt
            # The control: with the allowlist the same worker sends it (after the backoff).
            conn.execute("UPDATE coalition_webhook_subscription SET next_attempt_us = 0")
            lenient = WebhookDelivery(
                seeded.db_url, key, DeliveryPolicy(), urls=url_policy(allowing)
            )
            assert lenient.deliver_due(conn, http) == 1
        assert [r.event["data"]["ref"] for r in receiver.received] == ["ssrf-1"]
        log = call("grocer", "partner/WebhookDeliveries", id=sub_id)["webhookDeliveries"]
        assert [a["delivered"] for a in log["attempts"]] == [True, False]  # newest first
    finally:
        call.client.close()


def test_a_checked_address_is_the_one_connected_to_with_the_name_kept(
    seeded: Seeded,
    production: Settings,
    serve: Callable[[Starlette], str],
    receiver: Receiver,
) -> None:
    """The worker posts to the address it checked, never resolving the name again: a
    name only the policy's resolver knows (``.invalid`` is never in DNS) is answered
    127.0.0.1 — inside an allowlisted network, so it passes and is pinned — and the
    delivery arrives, the name kept in ``Host`` (for https, in SNI and the certificate
    check too). Had the HTTP client resolved the name itself, nothing would connect."""
    answers = {"hooks.partner.invalid": ["127.0.0.1"]}
    parsed = UrlPolicy.parse(True, "127.0.0.0/8")
    pinning = dataclasses.replace(parsed, resolver=lambda host, port: answers[host])
    url = receiver.url.replace("127.0.0.1", "hooks.partner.invalid")
    key = load_webhook_key(production)
    call = _api(serve, production, seeded)
    try:
        with psycopg.connect(seeded.db_url, autocommit=True) as conn, httpx.Client() as http:
            made = webhooks.create(
                conn, key, "grocer", url, ["earn.recorded"], now_us(), urls=pinning
            )
            assert not isinstance(made, Refusal), made
            earn(call, "grocer", "pinned-1", "M001")
            worker = WebhookDelivery(seeded.db_url, key, DeliveryPolicy(), urls=pinning)
            assert worker.deliver_due(conn, http) == 1
        log = call("grocer", "partner/WebhookDeliveries", id=made.subscription.subscription_id)
        [attempt] = log["webhookDeliveries"]["attempts"]
        assert attempt["delivered"], attempt
    finally:
        call.client.close()
    [got] = receiver.received
    assert got.event["data"]["ref"] == "pinned-1"
    assert got.headers["Host"] == url.removeprefix("http://").removesuffix("/hook")


def test_a_slow_resolution_holds_no_connection_and_is_bounded(
    seeded: Seeded,
    production: Settings,
    serve: Callable[[Starlette], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A subscription's host resolving slowly (a DNS server that does not answer) holds
    no pooled connection while it waits: with more creations waiting than the pool has
    connections, a till's read still answers at once. A resolution past the bound is
    refused, typed, and writes nothing."""
    import socket
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from coalition.api import db, webhooks_api

    released = threading.Event()
    real = socket.getaddrinfo

    def slow_dns(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "slow.example":  # only this name: the DNS server that will not answer
            released.wait(60)
            return real("93.184.216.34", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_dns)
    call = _api(serve, production, seeded)
    waiting = db.CONNECTIONS_MAX + 2
    try:
        with ThreadPoolExecutor(waiting) as pool:
            made = [
                pool.submit(_create, call, url)
                for url in [f"https://slow.example/hook-{n}" for n in range(waiting)]
            ]
            try:
                # Every creation is in flight, waiting on DNS; the read needs a connection.
                balance = call("grocer", "partner/MemberBalance", memberId="M001")
                assert int(balance["member"]["balancePoints"]) >= 0
                assert not any(future.done() for future in made)
            finally:
                released.set()
            answers = [future.result(timeout=120) for future in made]
        kinds = sorted({a["__typename"] for a in answers})
        assert kinds == ["CreatedWebhookSubscription", "TooManySubscriptions"], answers
        released.clear()
        monkeypatch.setattr(webhooks_api, "RESOLVE_SECONDS_MAX", 0.5)
        late = _create(call, "https://slow.example/late")
        released.set()
        assert late["__typename"] == "UrlNotAllowed", late
        assert "did not resolve within 0.5 s" in late["message"], late
        hooks = call("grocer", "partner/WebhookSubscriptions")["webhookSubscriptions"]
        assert "https://slow.example/late" not in {h["url"] for h in hooks}
    finally:
        call.client.close()


def test_https_to_a_pinned_address_checks_the_certificate_against_the_name(
    seeded: Seeded,
    production: Settings,
    serve: Callable[[Starlette], str],
    tmp_path: Path,
) -> None:
    """Over https the worker connects to the address it checked and still speaks TLS to
    the name: the receiver's hello carries the name (SNI), its certificate for that name
    passes, and a URL whose name the certificate does not cover is refused by the
    certificate check (logged, nothing received) though it reaches the same address."""
    server_tls, client_tls = make_tls(tmp_path / "tls", "hooks.partner.invalid")
    receiver = Receiver(tls=server_tls)
    answers = {"hooks.partner.invalid": ["127.0.0.1"], "other.partner.invalid": ["127.0.0.1"]}
    parsed = UrlPolicy.parse(True, "127.0.0.0/8")
    pinning = dataclasses.replace(parsed, resolver=lambda host, port: answers[host])
    good = receiver.url.replace("127.0.0.1", "hooks.partner.invalid")
    wrong = receiver.url.replace("127.0.0.1", "other.partner.invalid")
    key = load_webhook_key(production)
    call = _api(serve, production, seeded)
    try:
        with (
            psycopg.connect(seeded.db_url, autocommit=True) as conn,
            httpx.Client(verify=client_tls) as http,
        ):
            made = {}
            for partner, url in (("grocer", good), ("airline", wrong)):
                made[partner] = webhooks.create(
                    conn, key, partner, url, ["earn.recorded"], now_us(), urls=pinning
                )
                assert not isinstance(made[partner], Refusal), made[partner]
            earn(call, "grocer", "tls-1", "M001")
            earn(call, "airline", "tls-2", "M001")
            worker = WebhookDelivery(seeded.db_url, key, DeliveryPolicy(), urls=pinning)
            assert worker.deliver_due(conn, http) == 2
        logs = {
            partner: call(partner, "partner/WebhookDeliveries", id=sub.subscription.subscription_id)
            for partner, sub in made.items()
            if not isinstance(sub, Refusal)
        }
    finally:
        call.client.close()
        receiver.close()
    [delivered] = logs["grocer"]["webhookDeliveries"]["attempts"]
    assert delivered["delivered"], delivered
    [refused] = logs["airline"]["webhookDeliveries"]["attempts"]
    assert not refused["delivered"] and "certificate" in refused["error"].lower(), refused
    [got] = receiver.received  # the grocer's alone
    assert got.event["data"]["ref"] == "tls-1"
    assert got.headers["Host"] == good.removeprefix("https://").removesuffix("/hook")
    assert "hooks.partner.invalid" in receiver.server_names
    assert "other.partner.invalid" in receiver.server_names  # asked by name, refused by it

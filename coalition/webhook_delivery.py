"""The webhook delivery worker: the outbox's events to each subscriber, in seq order,
at least once (docs/WEBHOOKS.md).

Per subscription, one worker at a time (a session advisory lock, released by the
database if the worker dies, ``kill -9`` included), events after its cursor are posted
one by one, signed; a 2xx moves the cursor in the transaction that logs the attempt.
A worker killed after the receiver got an event but before the cursor moved sends it
again: receivers de-duplicate by event id. Anything else is a failed attempt: the next
is due after an exponential backoff with jitter, and after ``attempts_max`` failed
attempts at one event the subscription is marked ``failing`` and left alone until its
partner reactivates it. In memory each thread holds one batch (``batch_max`` events);
the queue itself is the outbox table, bounded by its payload limit per event and pruned
past its retention (``outbox_retention``). Each batch's URL is judged again by the address
policy (``webhook_urls``: resolved afresh, posted to the address checked); a refused one
is logged as a failed attempt and nothing is sent.

It runs in ``coalition serve`` (a thread pool beside the checkpointer, in the serving
parent) and alone as ``coalition webhooks deliver`` for a separate deployment; any
number of either may run against one database.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg

from coalition import hold_expiry, outbox
from coalition.webhook_secrets import WebhookKey, WebhookKeyError
from coalition.webhook_signature import HEADER, sign
from coalition.webhook_urls import Target, UrlPolicy
from coalition.webhooks import SUBSCRIPTION_LOCK as _LOCK
from ledger.timefmt import format_time_us, now_us

_log = logging.getLogger(__name__)
ERROR_CHARS_MAX = 500


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    attempts_max: int = 8  # failed attempts at one event before the endpoint is failing
    backoff_base_seconds: float = 1.0  # the first retry's delay; doubled each attempt
    backoff_max_seconds: float = 3600.0
    timeout_seconds: float = 10.0
    batch_max: int = 100
    poll_seconds: float = 0.5

    def backoff_seconds(self, attempts: int) -> float:
        """Equal jitter: half the exponential delay, plus up to as much again at random,
        so endpoints that failed together are not all tried again together."""
        delay = min(self.backoff_max_seconds, self.backoff_base_seconds * 2.0 ** (attempts - 1))
        return float(delay / 2 + random.uniform(0, delay / 2))


def body_of(event: outbox.StoredEvent) -> bytes:
    document = {
        "id": event.event_id,
        "seq": event.seq,
        "type": event.event_type,
        "partner": event.partner_id,
        "occurred_at": format_time_us(event.occurred_us),
        "data": event.payload,
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


class WebhookDelivery:
    def __init__(
        self,
        database_url: str,
        key: WebhookKey,
        policy: DeliveryPolicy | None = None,
        threads: int = 2,
        *,
        urls: UrlPolicy | None = None,
    ) -> None:
        self._url = database_url
        self._key = key
        self.policy = policy or DeliveryPolicy()
        # Where posts may go (webhook_urls); None: no address policy, as in development.
        # serve and ``webhooks deliver`` pass the settings' one.
        self.urls = urls or UrlPolicy(enforced=False)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"webhooks-{i}", daemon=True)
            for i in range(threads)
        ]
        self._swept_at = 0.0
        self._sweep_lock = threading.Lock()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self) -> None:
        with httpx.Client(timeout=self.policy.timeout_seconds, follow_redirects=False) as http:
            while not self._stop.is_set():
                try:
                    with psycopg.connect(self._url, autocommit=True) as conn:
                        while not self._stop.is_set():
                            self._sweep_holds(conn)
                            if not self.deliver_due(conn, http):
                                self._stop.wait(self.policy.poll_seconds)
                except Exception:
                    _log.exception("webhook delivery failed; retrying")
                    self._stop.wait(self.policy.poll_seconds)

    def _sweep_holds(self, conn: psycopg.Connection[Any]) -> None:
        """Announce expired holds (``hold_expiry``), at most once a second per process."""
        with self._sweep_lock:
            if time.monotonic() - self._swept_at < 1.0:
                return
            self._swept_at = time.monotonic()
        # Another process announcing the same holds first: its events stand, ours roll back.
        with contextlib.suppress(psycopg.errors.UniqueViolation):
            hold_expiry.sweep(conn, now_us())

    def deliver_due(self, conn: psycopg.Connection[Any], http: httpx.Client) -> int:
        """Attempt the events of every due subscription this worker can lock; how many
        attempts it made (0: nothing was due)."""
        due = conn.execute(
            "SELECT s.subscription_id FROM coalition_webhook_subscription s"
            " WHERE s.status = 'active' AND s.next_attempt_us <= %s AND EXISTS ("
            " SELECT 1 FROM coalition_event e WHERE e.event_seq > s.after_seq"
            " AND (e.partner_id = s.partner_id OR e.partner_id IS NULL)"
            " AND e.event_type = ANY(s.event_types))"
            " ORDER BY s.next_attempt_us LIMIT 50",
            (now_us(),),
        ).fetchall()
        attempts = 0
        for (subscription_id,) in due:
            if self._stop.is_set():
                break
            (locked,) = conn.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_LOCK, subscription_id)
            ).fetchone() or (False,)
            if not locked:
                continue  # another worker has it
            try:
                attempts += self._deliver(conn, http, subscription_id)
            finally:
                conn.execute(
                    "SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK, subscription_id)
                )
        return attempts

    def _deliver(self, conn: psycopg.Connection[Any], http: httpx.Client, sub_id: str) -> int:
        row = conn.execute(
            "SELECT partner_id, url, event_types, secret_sealed, key_id, status, after_seq,"
            " attempts, next_attempt_us FROM coalition_webhook_subscription"
            " WHERE subscription_id = %s",
            (sub_id,),
        ).fetchone()
        assert row is not None, "subscriptions are never deleted, only marked"
        partner_id, url, types, sealed, key_id, status, after_seq, failed, next_us = row
        if status != "active" or next_us > now_us():
            return 0  # moved on since the list was read
        try:
            secret = self._key.open(sub_id, bytes(sealed), key_id)
        except WebhookKeyError as exc:
            _log.error("%s", exc)
            return 0
        events = outbox.events_for(conn, partner_id, after_seq, types, self.policy.batch_max)
        # Judged again, resolved afresh, once per batch: DNS may have changed since the
        # subscription was made. The posts go to the address judged, not a new lookup.
        target = self.urls.judge(url) if events else None
        made = 0
        for event in events:
            if self._stop.is_set():
                break
            made += 1
            failed += 1
            if isinstance(target, Target):
                ok, code, error, took_ms = self._post(http, url, target, secret, event)
            else:  # refused: logged as an attempt, nothing sent
                ok, code, error, took_ms = False, None, f"refused: {target}"[:ERROR_CHARS_MAX], 0
            with conn.transaction():
                conn.execute(
                    "INSERT INTO coalition_webhook_delivery (subscription_id, event_seq,"
                    " event_id, attempt, attempted_at_us, status_code, error, duration_ms,"
                    " delivered) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (sub_id, event.seq, event.event_id, failed, now_us(), code, error, took_ms, ok),
                )
                if ok:
                    conn.execute(
                        "UPDATE coalition_webhook_subscription SET after_seq = %s,"
                        " attempts = 0, next_attempt_us = 0, last_error = NULL"
                        " WHERE subscription_id = %s",
                        (event.seq, sub_id),
                    )
                    failed = 0
                    continue
                giving_up = failed >= self.policy.attempts_max
                conn.execute(
                    "UPDATE coalition_webhook_subscription SET attempts = %s,"
                    " next_attempt_us = %s, last_error = %s,"
                    " status = CASE WHEN %s THEN 'failing' ELSE status END"
                    " WHERE subscription_id = %s AND status = 'active'",
                    (
                        failed,
                        now_us() + int(self.policy.backoff_seconds(failed) * 1_000_000),
                        error,
                        giving_up,
                        sub_id,
                    ),
                )
            if giving_up:
                _log.warning("webhook %s marked failing after %d attempts", sub_id, failed)
            break  # in order: nothing after a failed event goes before it
        return made

    def _post(
        self,
        http: httpx.Client,
        url: str,
        target: Target,
        secret: str,
        event: outbox.StoredEvent,
    ) -> tuple[bool, int | None, str | None, int]:
        body = body_of(event)
        request_url = httpx.URL(url)
        pinned: dict[str, str] = {}
        extensions: dict[str, Any] = {}
        if target.address is not None:  # to the checked address; the name for Host and TLS
            pinned["Host"] = request_url.netloc.decode("ascii")
            extensions["sni_hostname"] = request_url.host
            request_url = request_url.copy_with(host=target.address)
        headers = pinned | {
            "Content-Type": "application/json",
            "User-Agent": "coalition-webhooks/1",
            "Coalition-Event-Id": event.event_id,
            "Coalition-Event-Type": event.event_type,
            "Coalition-Event-Seq": str(event.seq),
            HEADER: sign(secret, int(time.time()), body),
        }
        started = time.monotonic()
        try:
            # Streamed and never read: a receiver's answer is its status alone.
            with http.stream(
                "POST", request_url, content=body, headers=headers, extensions=extensions
            ) as response:
                code = response.status_code
        except httpx.HTTPError as exc:
            took = int((time.monotonic() - started) * 1000)
            return False, None, f"{type(exc).__name__}: {exc}"[:ERROR_CHARS_MAX], took
        took = int((time.monotonic() - started) * 1000)
        if 200 <= code < 300:
            return True, code, None, took
        return False, code, f"HTTP {code}", took

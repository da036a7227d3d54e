"""Webhook subscriptions: a partner's endpoint and the event types it wants.

A new subscription starts at the outbox's head (it receives what happens from now on),
its secret made here, returned once, and stored sealed (``webhook_secrets``). Every use
case takes the partner it acts for and sees only that partner's subscriptions: another
partner's is ``UNKNOWN_SUBSCRIPTION``, exactly as one that does not exist.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from coalition import outbox
from coalition.context import Conn
from coalition.outcomes import Refusal, RefusalCode
from coalition.webhook_secrets import WebhookKey, new_secret
from coalition.webhook_urls import UrlPolicy

SUBSCRIPTIONS_PER_PARTNER_MAX = 10
URL_CHARS_MAX = 2000
# pg_advisory_lock's first key (the second: hashtext of the subscription id): held by the
# delivery worker while it delivers, by the outbox pruner while it judges the cursor.
SUBSCRIPTION_LOCK = 727_014
_COLUMNS = (
    "subscription_id, partner_id, url, event_types, status, after_seq, attempts,"
    " next_attempt_us, last_error, created_at_us, pruned_first_seq, pruned_last_seq,"
    " pruned_events"
)


@dataclass(frozen=True, slots=True)
class Subscription:
    subscription_id: str
    partner_id: str
    url: str
    event_types: list[str]
    # active; failing (stopped after too many attempts); behind (events it had not
    # received were pruned: stopped until reactivated); deleted
    status: str
    after_seq: int  # every event up to this one is delivered
    attempts: int  # failed attempts at the next event
    next_attempt_us: int
    last_error: str | None
    created_at_us: int
    # The last time events it had not received were pruned (outbox_retention): the first
    # and last such seq and how many of its events that was; None, None, 0 if never.
    pruned_first_seq: int | None = None
    pruned_last_seq: int | None = None
    pruned_events: int = 0


@dataclass(frozen=True, slots=True)
class Created:
    subscription: Subscription
    secret: str  # shown once: only its sealed form is kept


def check_url(url: str) -> str | None:
    """What is wrong with ``url`` as an endpoint, or None."""
    if not isinstance(url, str) or len(url) > URL_CHARS_MAX:
        return f"url: at most {URL_CHARS_MAX} characters"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "url: not a URL"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "url: an http(s) URL with a host"
    if parts.username or parts.password:
        return "url: no credentials in the URL (the signature authenticates us)"
    return None


def check_types(event_types: list[str]) -> str | None:
    unknown = sorted(set(event_types) - set(outbox.EVENT_TYPES))
    if not event_types or unknown:
        return f"eventTypes: one or more of {', '.join(outbox.EVENT_TYPES)}" + (
            f" (not {', '.join(unknown)})" if unknown else ""
        )
    return None


def create(
    conn: Conn,
    key: WebhookKey,
    partner_id: str,
    url: str,
    event_types: list[str],
    now_us: int,
    *,
    urls: UrlPolicy,
) -> Created | Refusal:
    """Judge the URL, then record the subscription (the CLI's one call; the API judges
    before it takes a connection, ``judge_target``, then calls ``record``)."""
    problem = judge_target(url, event_types, urls)
    if problem is not None:
        return problem
    return record(conn, key, partner_id, url, event_types, now_us)


def judge_target(url: str, event_types: list[str], urls: UrlPolicy) -> Refusal | None:
    """Whether a subscription to ``url`` for ``event_types`` may be made. No database:
    the address policy (webhook_urls) resolves the host, which may wait on DNS for
    seconds, and nothing — no lock, no pooled connection — should wait with it. Judged
    again at every delivery batch, as DNS can change."""
    problem = check_url(url) or check_types(event_types)
    if problem is not None:
        return Refusal(RefusalCode.INVALID_REQUEST, problem)
    judged = urls.judge(url)
    if isinstance(judged, str):
        return Refusal(RefusalCode.URL_NOT_ALLOWED, judged)
    return None


def record(
    conn: Conn,
    key: WebhookKey,
    partner_id: str,
    url: str,
    event_types: list[str],
    now_us: int,
) -> Created | Refusal:
    """Record a subscription ``judge_target`` allowed, under the partner's row lock."""
    assert check_url(url) is None and check_types(event_types) is None, "judge it first"
    with conn.transaction():
        known = conn.execute(
            "SELECT 1 FROM coalition_partner WHERE partner_id = %s FOR NO KEY UPDATE",
            (partner_id,),
        ).fetchone()
        if known is None:
            return Refusal(RefusalCode.UNKNOWN_PARTNER, f"no partner {partner_id}")
        # The partner's row is locked (NO KEY UPDATE: exclusive among creations, unlike
        # FOR SHARE): two creations at once count each other.
        (count,) = conn.execute(
            "SELECT count(*) FROM coalition_webhook_subscription"
            " WHERE partner_id = %s AND status <> 'deleted'",
            (partner_id,),
        ).fetchone() or (0,)
        if count >= SUBSCRIPTIONS_PER_PARTNER_MAX:
            return Refusal(
                RefusalCode.TOO_MANY_SUBSCRIPTIONS,
                f"at most {SUBSCRIPTIONS_PER_PARTNER_MAX} subscriptions per partner",
            )
        subscription_id = "whs_" + secrets.token_hex(8)
        secret = new_secret()
        row = conn.execute(
            "INSERT INTO coalition_webhook_subscription (subscription_id, partner_id, url,"
            " event_types, secret_sealed, key_id, status, after_seq, created_at_us)"
            " VALUES (%s, %s, %s, %s, %s, %s, 'active', %s, %s)"
            f" RETURNING {_COLUMNS}",
            (
                subscription_id,
                partner_id,
                url,
                sorted(set(event_types)),
                key.seal(subscription_id, secret),
                key.key_id,
                outbox.last_seq(conn),
                now_us,
            ),
        ).fetchone()
    assert row is not None
    return Created(Subscription(*row), secret)


def list_for(conn: Conn, partner_id: str | None) -> list[Subscription]:
    """A partner's subscriptions (None: every partner's, for the operator's CLI)."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM coalition_webhook_subscription"
        " WHERE status <> 'deleted' AND (%s::text IS NULL OR partner_id = %s)"
        " ORDER BY created_at_us, subscription_id",
        (partner_id, partner_id),
    ).fetchall()
    return [Subscription(*row) for row in rows]


def get(conn: Conn, partner_id: str | None, subscription_id: str) -> Subscription | Refusal:
    for found in list_for(conn, partner_id):
        if found.subscription_id == subscription_id:
            return found
    return Refusal(RefusalCode.UNKNOWN_SUBSCRIPTION, f"no subscription {subscription_id}")


def delete(conn: Conn, partner_id: str | None, subscription_id: str) -> Subscription | Refusal:
    return _set_status(conn, partner_id, subscription_id, "deleted", "status <> 'deleted'")


def reactivate(conn: Conn, partner_id: str | None, subscription_id: str) -> Subscription | Refusal:
    """A failing endpoint tried again, from the event it stopped at; one ``behind``
    resumes after the last of its events that were pruned, and its ``last_error`` (and
    ``pruned_*``) in the answer say which seqs it will never receive."""
    return _set_status(
        conn,
        partner_id,
        subscription_id,
        "active",
        "status <> 'deleted'",
        ", after_seq = CASE WHEN status = 'behind'"
        " THEN greatest(after_seq, coalesce(pruned_last_seq, after_seq)) ELSE after_seq END,"
        " last_error = CASE WHEN status = 'behind' THEN format('resumed after seq %%s: %%s'"
        " || ' of its events (seqs %%s to %%s) were pruned before delivery and are lost',"
        " pruned_last_seq, pruned_events, pruned_first_seq, pruned_last_seq)"
        " ELSE last_error END",
    )


def _set_status(
    conn: Conn,
    partner_id: str | None,
    subscription_id: str,
    status: str,
    where: str,
    also: str = "",
) -> Subscription | Refusal:
    row = conn.execute(
        f"UPDATE coalition_webhook_subscription SET status = %s, attempts = 0{also},"
        f" next_attempt_us = 0 WHERE subscription_id = %s AND {where}"
        " AND (%s::text IS NULL OR partner_id = %s)"
        f" RETURNING {_COLUMNS}",
        (status, subscription_id, partner_id, partner_id),
    ).fetchone()
    if row is None:
        return Refusal(RefusalCode.UNKNOWN_SUBSCRIPTION, f"no subscription {subscription_id}")
    return Subscription(*row)


@dataclass(frozen=True, slots=True)
class Attempt:
    event_seq: int
    event_id: str
    attempt: int
    attempted_at_us: int
    status_code: int | None
    error: str | None
    duration_ms: int
    delivered: bool


def deliveries(
    conn: Conn, partner_id: str | None, subscription_id: str, limit: int
) -> list[Attempt] | Refusal:
    """The delivery log of a subscription, newest first."""
    found = get(conn, partner_id, subscription_id)
    if isinstance(found, Refusal):
        return found
    rows = conn.execute(
        "SELECT event_seq, event_id::text, attempt, attempted_at_us, status_code, error,"
        " duration_ms, delivered FROM coalition_webhook_delivery WHERE subscription_id = %s"
        " ORDER BY delivery_id DESC LIMIT %s",
        (subscription_id, limit),
    ).fetchall()
    return [Attempt(*row) for row in rows]

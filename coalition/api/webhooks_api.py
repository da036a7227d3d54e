"""Webhook subscriptions over GraphQL: a partner key manages its own partner's, and
sees nothing of another's (``UNKNOWN_SUBSCRIPTION``, as for one that does not exist).
The signing secret is in the answer to ``createWebhookSubscription`` only."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import strawberry
from strawberry.types import Info

from coalition import outbox, webhooks
from coalition.api.context import ApiContext
from coalition.api.errors import ApiError
from coalition.api.results import refusal, union
from coalition.api.types import Long
from coalition.outcomes import Refusal, RefusalCode
from coalition.settings import Settings
from coalition.webhook_secrets import WebhookKey, WebhookKeyError, load_webhook_key
from coalition.webhook_urls import UrlPolicy, url_policy
from ledger.timefmt import format_time_us, now_us

Ctx = Info[ApiContext, None]
DELIVERIES_MAX = 200
RESOLVE_SECONDS_MAX = 5.0  # a subscription whose host takes longer to resolve is refused


class WebhooksDisabled(ApiError):
    code = "WEBHOOKS_DISABLED"
    message = "webhooks are not configured on this server (no COALITION_WEBHOOK_KEY)"


def _key(settings: Settings) -> WebhookKey:
    try:
        return _loaded(settings)
    except WebhookKeyError:
        raise WebhooksDisabled() from None


@functools.lru_cache(maxsize=4)
def _loaded(settings: Settings) -> WebhookKey:
    return load_webhook_key(settings)


@functools.lru_cache(maxsize=4)
def _urls(settings: Settings) -> UrlPolicy:
    return url_policy(settings)


@strawberry.type(
    description="Events of a subscription's that the outbox pruned before they were delivered."
)
class PrunedEvents:
    first_seq: Long
    last_seq: Long
    events: Long = strawberry.field(description="how many of its events (partner and types)")


@strawberry.type
class WebhookSubscription:
    id: str
    url: str
    event_types: list[str]
    status: str = strawberry.field(
        description="active; failing: stopped after too many failed attempts until"
        " reactivated; behind: events it had not received were pruned (see `pruned`),"
        " stopped until reactivated, which resumes after them"
    )
    after_seq: Long = strawberry.field(description="every event up to this seq is delivered")
    attempts: int
    next_attempt_at: str | None
    last_error: str | None
    created_at: str
    pruned: PrunedEvents | None = strawberry.field(
        description="the last time events it had not received were pruned (null: never)"
    )


@strawberry.type
class CreatedWebhookSubscription:
    subscription: WebhookSubscription
    secret: str = strawberry.field(description="shown once: sign-check deliveries with it")


@strawberry.type
class WebhookAttempt:
    event_seq: Long
    event_id: str
    attempt: int
    attempted_at: str
    status_code: int | None
    error: str | None
    duration_ms: int
    delivered: bool


@strawberry.type
class WebhookDeliveryLog:
    attempts: list[WebhookAttempt]


C = RefusalCode
CreateWebhookResult = union(
    "CreateWebhookResult",
    CreatedWebhookSubscription,
    C.INVALID_REQUEST,
    C.UNKNOWN_PARTNER,
    C.TOO_MANY_SUBSCRIPTIONS,
    C.URL_NOT_ALLOWED,
)
WebhookResult = union("WebhookResult", WebhookSubscription, C.UNKNOWN_SUBSCRIPTION)
WebhookDeliveriesResult = union(
    "WebhookDeliveriesResult", WebhookDeliveryLog, C.INVALID_REQUEST, C.UNKNOWN_SUBSCRIPTION
)


def subscription(s: webhooks.Subscription) -> WebhookSubscription:
    return WebhookSubscription(
        id=s.subscription_id,
        url=s.url,
        event_types=list(s.event_types),
        status=s.status,
        after_seq=s.after_seq,
        attempts=s.attempts,
        next_attempt_at=format_time_us(s.next_attempt_us) if s.next_attempt_us else None,
        last_error=s.last_error,
        created_at=format_time_us(s.created_at_us),
        pruned=None
        if s.pruned_first_seq is None or s.pruned_last_seq is None
        else PrunedEvents(
            first_seq=s.pruned_first_seq, last_seq=s.pruned_last_seq, events=s.pruned_events
        ),
    )


def _answer(outcome: Any) -> Any:
    return refusal(outcome) if isinstance(outcome, Refusal) else subscription(outcome)


@strawberry.type
class WebhookMutation:
    @strawberry.mutation(
        graphql_type=CreateWebhookResult,
        description="Partner: post these event types to this URL, signed (docs/WEBHOOKS.md);"
        " outside development an https URL whose host resolves to public addresses only.",
    )
    async def create_webhook_subscription(self, info: Ctx, url: str, event_types: list[str]) -> Any:
        who = info.context.who("partner")
        key = _key(info.context.settings)
        # Resolving the host may wait on DNS: in a thread, bounded, holding no connection.
        try:
            problem = await asyncio.wait_for(
                asyncio.to_thread(
                    webhooks.judge_target, url, event_types, _urls(info.context.settings)
                ),
                RESOLVE_SECONDS_MAX,
            )
        except TimeoutError:
            problem = Refusal(
                RefusalCode.URL_NOT_ALLOWED,
                f"url: the host did not resolve within {RESOLVE_SECONDS_MAX:g} s",
            )
        if problem is not None:
            return refusal(problem)
        made = await info.context.db(
            webhooks.record, key, who.partner_id or "", url, event_types, now_us()
        )
        if isinstance(made, Refusal):
            return refusal(made)
        return CreatedWebhookSubscription(
            subscription=subscription(made.subscription), secret=made.secret
        )

    @strawberry.mutation(graphql_type=WebhookResult, description="Partner: stop and remove.")
    async def delete_webhook_subscription(self, info: Ctx, id: str) -> Any:
        who = info.context.who("partner")
        return _answer(await info.context.db(webhooks.delete, who.partner_id or "", id))

    @strawberry.mutation(
        graphql_type=WebhookResult,
        description="Partner: try a failing endpoint again, from the event it stopped at;"
        " one behind resumes after its pruned events (`pruned`, `lastError` name them).",
    )
    async def reactivate_webhook_subscription(self, info: Ctx, id: str) -> Any:
        who = info.context.who("partner")
        return _answer(await info.context.db(webhooks.reactivate, who.partner_id or "", id))


@strawberry.type
class WebhookQuery:
    @strawberry.field(description="Partner: this partner's webhook subscriptions.")
    async def webhook_subscriptions(self, info: Ctx) -> list[WebhookSubscription]:
        who = info.context.who("partner")
        found = await info.context.db(webhooks.list_for, who.partner_id or "")
        return [subscription(s) for s in found]

    @strawberry.field(
        graphql_type=WebhookDeliveriesResult,
        description="Partner: a subscription's delivery attempts, newest first.",
    )
    async def webhook_deliveries(self, info: Ctx, id: str, limit: int = 50) -> Any:
        who = info.context.who("partner")
        if not 1 <= limit <= DELIVERIES_MAX:
            return refusal(Refusal(C.INVALID_REQUEST, f"limit: 1–{DELIVERIES_MAX}"))
        found = await info.context.db(webhooks.deliveries, who.partner_id or "", id, limit)
        if isinstance(found, Refusal):
            return refusal(found)
        return WebhookDeliveryLog(
            attempts=[
                WebhookAttempt(
                    event_seq=a.event_seq,
                    event_id=a.event_id,
                    attempt=a.attempt,
                    attempted_at=format_time_us(a.attempted_at_us),
                    status_code=a.status_code,
                    error=a.error,
                    duration_ms=a.duration_ms,
                    delivered=a.delivered,
                )
                for a in found
            ]
        )

    @strawberry.field(description="The event types a subscription may name.")
    def webhook_event_types(self, info: Ctx) -> list[str]:
        info.context.who()
        return list(outbox.EVENT_TYPES)

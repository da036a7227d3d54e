"""CLI verbs for webhooks: ``webhooks deliver`` (the delivery worker, for a deployment
of its own), and the operator's ``create``, ``list``, ``delete``, ``reactivate``, ``log``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import psycopg

from coalition import outbox, webhooks
from coalition.cli._common import require_current_schema
from coalition.database import database_url
from coalition.outcomes import Refusal
from coalition.settings import Settings
from coalition.webhook_delivery import DeliveryPolicy, WebhookDelivery
from coalition.webhook_secrets import load_webhook_key
from coalition.webhook_urls import UrlPolicy, url_policy
from ledger.timefmt import format_time_us, now_us

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
_DEFAULT = DeliveryPolicy()


def add_verbs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("webhooks", help="webhook subscriptions and their delivery worker")
    verbs = p.add_subparsers(required=True, metavar="ACTION")
    d = verbs.add_parser("deliver", help="run the delivery worker until SIGTERM or SIGINT")
    d.add_argument("--threads", type=int, default=2, help="subscriptions delivered at once")
    d.add_argument(
        "--attempts",
        type=int,
        default=_DEFAULT.attempts_max,
        help="failed attempts at one event before the endpoint is marked failing",
    )
    d.add_argument(
        "--backoff-seconds",
        type=float,
        default=_DEFAULT.backoff_base_seconds,
        help="the first retry's delay, doubled at each failure (with jitter)",
    )
    d.add_argument(
        "--poll-seconds",
        type=float,
        default=_DEFAULT.poll_seconds,
        help="how often the outbox is read for due events",
    )
    d.set_defaults(handler=deliver)
    c = verbs.add_parser("create", help="subscribe a partner's URL (the secret is shown once)")
    c.add_argument("--partner", required=True, help="the partner whose events it receives")
    c.add_argument("--url", required=True, help="the endpoint events are POSTed to")
    c.add_argument(
        "--events", required=True, help=f"comma-separated: {', '.join(outbox.EVENT_TYPES)}"
    )
    c.set_defaults(handler=create)
    ls = verbs.add_parser("list", help="subscriptions (never their secrets)")
    ls.add_argument("--partner", help="only this partner's (default: every partner's)")
    ls.set_defaults(handler=list_)
    for name, help_ in (("delete", "stop and remove"), ("reactivate", "retry a failing one")):
        v = verbs.add_parser(name, help=help_)
        v.add_argument("subscription_id", help="as create or list printed it")
        v.set_defaults(handler=delete if name == "delete" else reactivate)
    lg = verbs.add_parser("log", help="a subscription's delivery attempts, newest first")
    lg.add_argument("subscription_id", help="as create or list printed it")
    lg.add_argument("--limit", type=int, default=50, help="attempts shown (default 50)")
    lg.set_defaults(handler=log)


def deliver(args: argparse.Namespace) -> int:
    policy = DeliveryPolicy(
        attempts_max=args.attempts,
        backoff_base_seconds=args.backoff_seconds,
        poll_seconds=args.poll_seconds,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with database_url() as url:
        require_current_schema(url)
        settings = Settings.from_env()
        worker = WebhookDelivery(
            url, load_webhook_key(settings), policy, args.threads, urls=_urls(settings)
        )
        worker.start()
        print("delivering webhooks", flush=True)
        stop.wait()
        worker.stop()
    return EXIT_OK


def _urls(settings: Settings) -> UrlPolicy:
    try:
        return url_policy(settings)
    except ValueError as exc:  # a bad COALITION_WEBHOOK_ALLOW_HOSTS: said, not a traceback
        print(str(exc), file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def create(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    key = load_webhook_key(settings)
    types = [t.strip() for t in args.events.split(",") if t.strip()]
    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        made = webhooks.create(
            conn, key, args.partner, args.url, types, now_us(), urls=_urls(settings)
        )
    if isinstance(made, Refusal):
        print(str(made), file=sys.stderr)
        return EXIT_REFUSED
    print(made.secret)
    print(
        f"subscription {made.subscription.subscription_id} for {args.partner}"
        " — store the secret now: it is kept sealed and never shown again",
        file=sys.stderr,
    )
    return EXIT_OK


def list_(args: argparse.Namespace) -> int:
    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        for s in webhooks.list_for(conn, args.partner):
            print(
                f"{s.subscription_id}  {s.partner_id:<16} {s.status:<8} after {s.after_seq:<8}"
                f" {s.url}  {','.join(s.event_types)}"
            )
    return EXIT_OK


def _changed(args: argparse.Namespace, fn: object) -> int:
    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        done = fn(conn, None, args.subscription_id)  # type: ignore[operator]
    if isinstance(done, Refusal):
        print(str(done), file=sys.stderr)
        return EXIT_REFUSED
    print(f"subscription {done.subscription_id} is {done.status}")
    if done.status == "active" and done.last_error:  # a behind one: which seqs it lost
        print(f"  {done.last_error}")
    return EXIT_OK


def delete(args: argparse.Namespace) -> int:
    return _changed(args, webhooks.delete)


def reactivate(args: argparse.Namespace) -> int:
    return _changed(args, webhooks.reactivate)


def log(args: argparse.Namespace) -> int:
    with database_url() as url, psycopg.connect(url, autocommit=True) as conn:
        require_current_schema(url)
        attempts = webhooks.deliveries(conn, None, args.subscription_id, args.limit)
    if isinstance(attempts, Refusal):
        print(str(attempts), file=sys.stderr)
        return EXIT_REFUSED
    for a in attempts:
        outcome = "delivered" if a.delivered else f"failed ({a.error})"
        print(
            f"{format_time_us(a.attempted_at_us)}  seq {a.event_seq}  attempt {a.attempt}"
            f"  {a.duration_ms} ms  {outcome}"
        )
    return EXIT_OK

"""``coalition serve``: the HTTP API (GraphQL, checkpoints, proofs, health) in one or
several worker processes, with the scheduler and the webhook worker beside them."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from coalition.api.write_positions import ENV as POSITIONS_ENV
from coalition.api.write_positions import create_shared_table
from coalition.cli._common import EXIT_OK, EXIT_USAGE, migrate_and_say, require_current_schema
from coalition.database import database_url, replica_url
from coalition.settings import Settings


def add_verbs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve the HTTP API (checkpoints, proofs, health)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 in a container)",
    )
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default: COALITION_WORKERS, else the cores this may use)",
    )
    p.add_argument(
        "--no-seed",
        dest="seed",
        action="store_false",
        help="do not seed a demo coalition into an empty database",
    )
    p.add_argument(
        "--no-migrate",
        dest="migrate",
        action="store_false",
        help="do not migrate at start (the app's role may not): refuse to start unless the "
        "schema is already the code's (run 'coalition migrate' as its owner first)",
    )
    p.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    from coalition.stopping import Stopped, stop_on_signals

    # SIGTERM and SIGINT unwind through every block below (coalition/stopping.py).
    with stop_on_signals():
        try:
            return _serve(args)
        except Stopped as stop:
            print(f"stopped ({stop})", file=sys.stderr, flush=True)
            return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from coalition.api.app import create_app
    from coalition.api.observability import configure_logging
    from coalition.jobs import in_serve, start_scheduler
    from coalition.seed import seed_if_empty
    from coalition.webhook_urls import url_policy

    try:
        settings = Settings.from_env()
        scheduled = in_serve()
        url_policy(settings)  # a bad COALITION_WEBHOOK_ALLOW_HOSTS stops the start here
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    workers = settings.workers if args.workers is None else args.workers
    if not 1 <= workers <= 256:
        print("--workers: 1–256 processes", file=sys.stderr)
        return EXIT_USAGE
    with database_url() as url:
        # Once per deployment, here in the serving parent, never in a worker: the
        # migrations, the demo seed and the scheduler (checkpoints and the other jobs).
        if args.migrate:
            migrate_and_say(url)
        else:
            require_current_schema(url)
        keys = seed_if_empty(url) if args.seed else {}
        scheduler = start_scheduler(url, settings) if scheduled else None
        # The webhook worker, like the scheduler, runs once, here in the parent.
        from coalition.webhook_delivery import WebhookDelivery
        from coalition.webhook_secrets import WebhookKeyError, load_webhook_key

        webhooks = None
        positions: Path | None = None
        try:
            webhooks = WebhookDelivery(url, load_webhook_key(settings), urls=url_policy(settings))
            webhooks.start()
        except WebhookKeyError as exc:
            print(f"webhooks not delivered: {exc}", file=sys.stderr, flush=True)
        try:
            base = f"http://{args.host}:{args.port}"
            print(
                f"serving on {base}/graphql with {workers} worker process"
                + ("es" if workers > 1 else "")
                + (" (GraphiQL: open it in a browser)" if settings.development else ""),
                flush=True,
            )
            for role, key in keys.items():
                print(f"  {role:<22} Authorization: Bearer {key}", flush=True)
            if keys:
                print(
                    "  (demo keys: shown once, stored only as hashes; make more with "
                    "'coalition apikey create')",
                    flush=True,
                )
            elif args.seed:
                print(
                    "  the demo coalition was seeded at an earlier start, and its keys shown"
                    " then (only their hashes are kept); make a key with\n"
                    "  .venv/bin/coalition apikey create --role auditor --label me",
                    flush=True,
                )
            configure_logging()
            if workers == 1:
                uvicorn.run(
                    create_app(settings, url, replica_url=replica_url()),
                    host=args.host,
                    port=args.port,
                    log_level="warning",
                    access_log=False,
                )
            else:
                # Each worker builds its own app (pool, group committer, key cache) from
                # the environment; they share the socket, and the journal's chain-head
                # lock orders their appends. SIGTERM or SIGINT here stops them all.
                os.environ["DATABASE_URL"] = url
                if replica_url() is not None:  # read-your-writes on any worker
                    positions = create_shared_table()
                    os.environ[POSITIONS_ENV] = str(positions)
                uvicorn.run(
                    "coalition.api.app:app_from_env",
                    factory=True,
                    workers=workers,
                    host=args.host,
                    port=args.port,
                    log_level="warning",
                    access_log=False,
                )
        finally:
            if positions is not None:
                positions.unlink(missing_ok=True)
            if webhooks is not None:
                webhooks.stop()
            if scheduler is not None:
                scheduler.stop()
    return EXIT_OK

"""The Starlette application: health, readiness, the latest checkpoint and plain-text proofs.

``/checkpoint`` serves the latest signed checkpoint as the signed note itself, and the
``/proof/*`` endpoints return RFC 9162 audit paths as base64 hashes, one per line — the
shape witnesses and tlog tooling expect, with nothing of ours needed to read them.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from psycopg_pool import ConnectionPool
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from coalition.migrate import is_current
from coalition.settings import Settings
from ledger import checkpoint_log, proofs

TEXT = "text/plain; charset=utf-8"


def create_app(settings: Settings, database_url: str) -> Starlette:
    pool = ConnectionPool(
        database_url, min_size=1, max_size=8, open=False, kwargs={"autocommit": True}
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool.open(wait=True, timeout=30)
        try:
            yield
        finally:
            pool.close()

    def with_conn(fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            with pool.connection() as conn:
                return fn(conn, *args)

        return run

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n", media_type=TEXT)

    async def readyz(request: Request) -> Response:
        try:
            current = await run_in_threadpool(is_current, database_url)
        except Exception:  # not ready is an answer, not a crash
            current = False
        status = 200 if current else 503
        return JSONResponse({"database": "ready" if current else "not ready"}, status_code=status)

    async def checkpoint(request: Request) -> Response:
        stored = await run_in_threadpool(with_conn(checkpoint_log.latest))
        if stored is None:
            return PlainTextResponse("no checkpoint signed yet\n", status_code=404)
        return Response(stored.signed_note, media_type=TEXT)

    async def consistency(request: Request) -> Response:
        sizes = _ints(request, "old", "new")
        if sizes is None:
            return PlainTextResponse("give integer old and new sizes\n", status_code=400)
        return await _proof(with_conn(proofs.consistency_proof), *sizes)

    async def inclusion(request: Request) -> Response:
        params = _ints(request, "seq", "size")
        if params is None:
            return PlainTextResponse("give integer seq and size\n", status_code=400)
        return await _proof(with_conn(proofs.inclusion_proof), *params)

    return Starlette(
        debug=False,
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/checkpoint", checkpoint),
            Route("/proof/consistency", consistency),
            Route("/proof/inclusion", inclusion),
        ],
        lifespan=lifespan,
    )


def _ints(request: Request, *names: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(request.query_params[n]) for n in names)
    except (KeyError, ValueError):
        return None


async def _proof(fn: Callable[..., list[bytes]], *args: int) -> Response:
    try:
        path = await run_in_threadpool(fn, *args)
    except proofs.ProofUnavailable as exc:
        return PlainTextResponse(f"{exc}\n", status_code=400)
    body = "".join(base64.b64encode(h).decode() + "\n" for h in path)
    return PlainTextResponse(body, media_type=TEXT)

"""The Starlette application: ``/graphql`` (GraphiQL only in development), ``/healthz``,
``/readyz``, ``/metrics`` (for a ``metrics`` or ``operator`` key), ``/checkpoint`` and
plain-text proofs for witnesses.

Every request gets a request id (echoed as ``X-Request-Id`` and on every log line); the
API key is checked once per request, then the key's token bucket; bodies are bounded.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLRequestData
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult

from coalition.api.context import ApiContext
from coalition.api.db import Database, DatabaseHealth
from coalition.api.errors import DatabaseUnavailable
from coalition.api.event_stream import ConnectionSlots, EventStreamHandler
from coalition.api.group_commit import GroupCommittedCoalition, GroupCommitter
from coalition.api.http_body import JsonRequests
from coalition.api.keycache import ApiKeyCache
from coalition.api.metrics_access import MetricsAccess, expired_refusal
from coalition.api.observability import (
    APPEND_BATCH,
    JOBS,
    JOURNAL_LENGTH,
    RATE_LIMITED,
    REGISTRY,
    OperationMetrics,
    request_id_var,
)
from coalition.api.ratelimit import RateLimiter, retry_after_header
from coalition.api.replica import (
    LSN_HEADER,
    READ_AFTER_HEADER,
    Reader,
    ReadRouting,
)
from coalition.api.schema import build_schema
from coalition.api.trusted import DocumentRefused, TrustedDocuments
from coalition.api.write_positions import WritePositions
from coalition.api_keys import KeyExpired, Principal
from coalition.context import Coalition, after_append
from coalition.job_record import job_records
from coalition.keys import load_signer
from coalition.settings import Settings
from coalition.wal_position import format_lsn, parse_lsn
from coalition.web.routes import web_routes  # the web console (docs/DESIGN.md)
from graphql import GraphQLError, OperationType, get_operation_ast
from graphql import parse as parse_graphql
from ledger import checkpoint_log, proofs, reads

TEXT = "text/plain; charset=utf-8"
BODY_BYTES_MAX = 1 << 20
_log = logging.getLogger("coalition.api")


class _CoalitionWithMetrics(Coalition):
    def __init__(self) -> None:
        super().__init__()

        def keep(conn: Any, appended: list[Any]) -> None:
            APPEND_BATCH.observe(len(appended))
            after_append(conn, appended)

        self.journal.after_append = keep


class _GraphQL(JsonRequests, GraphQL[ApiContext, None]):
    graphql_transport_ws_handler_class = EventStreamHandler  # subscriptions: api.event_stream

    def __init__(self, state: dict[str, Any], development: bool) -> None:
        schema = build_schema(development=development, extra_extensions=(OperationMetrics,))
        super().__init__(
            schema,
            graphql_ide="graphiql" if development else None,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        )
        self.state = state
        self.trusted: TrustedDocuments = state["trusted"]

    async def execute_single(
        self,
        request: Any,
        request_adapter: Any,
        sub_response: Any,
        context: ApiContext,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        role = context.principal.role if context.principal else None
        document = self.trusted.resolve(role, request_data.query, request_data.extensions)
        if isinstance(document, DocumentRefused):
            error = GraphQLError(document.message, extensions={"code": document.code})
            return ExecutionResult(data=None, errors=[error])
        request_data = dataclasses.replace(request_data, query=document)
        routing: ReadRouting = self.state["routing"]
        writes = routing.replica is not None and _is_mutation(document or "", request_data)
        if writes:  # a mutation's answer reads what it wrote: all of it on the primary
            context.reader = Reader(ReadRouting(routing.primary, None), None, None)
        result = await super().execute_single(
            request, request_adapter, sub_response, context, root_value, request_data
        )
        if writes and context.writer is not None:
            with contextlib.suppress(DatabaseUnavailable):
                lsn = await routing.wrote(context.writer)
                if lsn is not None:
                    sub_response.headers[LSN_HEADER] = format_lsn(lsn)
        if any(isinstance(e.original_error, DatabaseUnavailable) for e in result.errors or ()):
            sub_response.status_code = 503  # the errors say so too, as DATABASE_UNAVAILABLE
            sub_response.headers.update(_retry_after())
        return result

    async def get_context(self, request: Any, response: Any) -> ApiContext:
        return ApiContext(
            # A WebSocket's principal is set at its connection_init (api.event_stream).
            principal=request.scope.get("principal"),
            database=self.state["database"],
            coalition=self.state["coalition"],
            tills=self.state["tills"],
            signer=self.state["signer"],
            settings=self.state["settings"],
            request_id=request_id_var.get(),
            api_keys=self.state["api_keys"],
            routing=self.state["routing"],
            read_after_lsn=parse_lsn(request.headers.get(READ_AFTER_HEADER, "")),
        )


def create_app(
    settings: Settings,
    database_url: str,
    limiter: RateLimiter | None = None,
    replica_url: str | None = None,
) -> Starlette:
    health = DatabaseHealth()  # one outage, logged once, whichever pool finds it
    database = Database(database_url, health=health)
    # The replica's outages are its own: reads fall back to the primary (api.replica).
    routing = ReadRouting(
        database,
        Database(replica_url) if replica_url else None,
        WritePositions.from_env(),  # the table serve's workers share, when it made one
    )
    coalition = _CoalitionWithMetrics()
    committer = GroupCommitter(Database(database_url, connections_max=1, health=health), coalition)
    api_keys = ApiKeyCache(database_url)
    state: dict[str, Any] = {
        "api_keys": api_keys,
        "database": database,
        "coalition": coalition,
        "tills": GroupCommittedCoalition(coalition, committer),
        "signer": load_signer(settings),
        "settings": settings,
        "trusted": TrustedDocuments.load(settings.trusted_documents_roles),
        "ws_slots": ConnectionSlots(),
        "routing": routing,
    }
    limiter = limiter or RateLimiter()
    metrics_access = MetricsAccess(api_keys, database)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        api_keys.start()
        try:
            yield
        finally:
            await api_keys.close()
            await committer.close()
            await routing.close()
            await database.close()

    async def admit(scope: Scope) -> Response | None:
        """A refusal before GraphQL runs (too large, too many), or None to go on; the
        caller's principal (or None) is left in the scope for the context."""
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > BODY_BYTES_MAX):
            return _too_large()
        principal = await _principal(api_keys, database, headers.get("authorization", ""))
        if isinstance(principal, KeyExpired):
            return expired_refusal(principal)
        scope["principal"] = principal
        client = scope["client"][0] if scope.get("client") else "unknown"
        key = principal.key_id if principal else client
        role = principal.role if principal else "anonymous"
        wait = limiter.take(key, role)
        if not wait:
            return None
        RATE_LIMITED.labels(role).inc()
        return _refusal(
            "rate limit exceeded", "RATE_LIMITED", 429, {"Retry-After": retry_after_header(wait)}
        )

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n", media_type=TEXT)

    async def readyz(request: Request) -> Response:
        headers: dict[str, str] = {}
        try:
            current = await database.is_current()
        except DatabaseUnavailable:  # logged once per outage, by the database's health
            current = False
            headers = _retry_after()
        except Exception:  # not ready is an answer, not a crash
            _log.exception("readiness check failed")
            current = False
        status = 200 if current else 503
        body = {"database": "ready" if current else "not ready"}
        return JSONResponse(body, status_code=status, headers=headers or None)

    async def metrics(request: Request) -> Response:
        refused = await metrics_access.refusal(request.headers.get("authorization", ""))
        if refused is not None:
            return refused
        # The metrics answer during an outage too (database_up says it); only the
        # journal's length and the jobs' record, which need the database, are then
        # left as last seen.
        with contextlib.suppress(DatabaseUnavailable):
            head = await database.run(reads.head)
            JOURNAL_LENGTH.set(head.tree_size)
            JOBS.update(await database.run(job_records))
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def checkpoint(request: Request) -> Response:
        stored = await database.run(checkpoint_log.latest)
        if stored is None:
            return PlainTextResponse("no checkpoint signed yet\n", status_code=404)
        return Response(stored.signed_note, media_type=TEXT)

    async def consistency(request: Request) -> Response:
        sizes = _ints(request, "old", "new")
        if sizes is None:
            return PlainTextResponse("give integer old and new sizes\n", status_code=400)
        return await _proof(database, proofs.consistency_proof, *sizes)

    async def inclusion(request: Request) -> Response:
        params = _ints(request, "seq", "size")
        if params is None:
            return PlainTextResponse("give integer seq and size\n", status_code=400)
        return await _proof(database, proofs.inclusion_proof, *params)

    graphql = _GraphQL(state, settings.development)
    # In development every answer names the process that gave it (tests of several
    # workers check each one); in production that is nobody's business.
    worker = str(os.getpid()) if settings.development else None
    return Starlette(
        debug=False,
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/checkpoint", checkpoint),
            Route("/proof/consistency", consistency),
            Route("/proof/inclusion", inclusion),
            *web_routes(state, graphql),
        ],
        middleware=[
            Middleware(BodyLimit, max_bytes=BODY_BYTES_MAX),
            Middleware(Gate, admit=admit, worker=worker),
        ],
        lifespan=lifespan,
    )


def app_from_env() -> Starlette:
    """The app as each worker process of ``coalition serve --workers N`` builds it: the
    settings from the environment, the database from ``DATABASE_URL`` (which serve sets
    for its workers, the embedded server's too). Migrations, the demo seed and the
    scheduler are the serving parent's, once per deployment, never a worker's."""
    from coalition.api.observability import configure_logging

    configure_logging()
    return create_app(
        Settings.from_env(),
        os.environ["DATABASE_URL"],
        replica_url=os.environ.get("DATABASE_REPLICA_URL") or None,
    )


def _is_mutation(document: str, request_data: GraphQLRequestData) -> bool:
    """Whether the operation run is a mutation (a document that does not parse is
    refused by GraphQL itself: no write)."""
    try:
        parsed = parse_graphql(document)
    except GraphQLError:
        return False
    operation = get_operation_ast(parsed, request_data.operation_name)
    return operation is not None and operation.operation is OperationType.MUTATION


def _refusal(
    message: str, code: str, status: int, headers: dict[str, str] | None = None
) -> Response:
    body = {"errors": [{"message": message, "extensions": {"code": code}}]}
    return JSONResponse(body, status_code=status, headers=headers)


def _too_large() -> Response:
    return _refusal("request body too large", "PAYLOAD_TOO_LARGE", 413)


def _retry_after() -> dict[str, str]:
    return {"Retry-After": str(DatabaseUnavailable.retry_after_seconds)}


def _unavailable() -> Response:
    """503 for any request that found the database unavailable: GraphQL-shaped, as a
    client of /graphql expects, and with the same code the GraphQL errors carry."""
    error = DatabaseUnavailable()
    return _refusal(error.message, error.code, 503, _retry_after())


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Bound request bodies as they stream in (a chunked body has no Content-Length)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except Exception as exc:  # may arrive wrapped in a task group's ExceptionGroup
            too_large = isinstance(exc, _TooLarge) or (
                isinstance(exc, BaseExceptionGroup) and exc.subgroup(_TooLarge) is not None
            )
            if started or not too_large:
                raise
            response = _too_large()
            response.headers["X-Request-Id"] = request_id_var.get()
            await response(scope, receive, send)


def _ints(request: Request, *names: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(request.query_params[n]) for n in names)
    except (KeyError, ValueError):
        return None


async def _proof(database: Database, fn: Callable[..., list[bytes]], *args: int) -> Response:
    try:
        path = await database.run(fn, *args)
    except proofs.ProofUnavailable as exc:
        return PlainTextResponse(f"{exc}\n", status_code=400)
    body = "".join(base64.b64encode(h).decode() + "\n" for h in path)
    return PlainTextResponse(body, media_type=TEXT)


async def _principal(
    api_keys: ApiKeyCache, database: Database, header: str
) -> Principal | KeyExpired | None:
    if not header.lower().startswith("bearer "):
        return None
    return await api_keys.authenticate(database, header[7:].strip())


class Gate:
    """Every request gets a request id (echoed as ``X-Request-Id``); a GraphQL request is
    first admitted (size, key, rate). Plain ASGI: no second task per request."""

    def __init__(
        self,
        app: ASGIApp,
        admit: Callable[[Scope], Awaitable[Response | None]],
        worker: str | None = None,
    ) -> None:
        self.app = app
        self.admit = admit
        self.worker = worker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id")
        request_id = (given or uuid.uuid4().hex)[:64]
        request_id_var.set(request_id)

        started = False

        async def tagged(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers["X-Request-Id"] = request_id
                if self.worker is not None:
                    headers["X-Worker"] = self.worker
            await send(message)

        try:
            refusal = await self.admit(scope) if scope["path"] == "/graphql" else None
            if refusal is not None:
                await refusal(scope, receive, tagged)
                return
            await self.app(scope, receive, tagged)
        except DatabaseUnavailable:  # authentication, or an endpoint outside GraphQL
            if started:
                raise
            await _unavailable()(scope, receive, tagged)

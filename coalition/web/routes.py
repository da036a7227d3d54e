"""The console's routes: sign-in and sign-out, every page (``PAGES``, by role), the
static files, and an offline GraphiQL for ``/graphql`` in development.

``web_routes(state, graphql)`` is all the app adds: ``state`` is the app's own (database,
coalition, signer, key cache, settings), so pages run on the same objects as the API.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from coalition import signin_limit
from coalition.api.schema import build_schema
from coalition.api_keys import KeyExpired
from coalition.web import (
    pages_auditor,
    pages_finance,
    pages_kpis,
    pages_operator,
    pages_partner,
)
from coalition.web.framework import (
    PREFIX,
    PRESESSION_COOKIE,
    SESSION_COOKIE,
    Page,
    endpoint,
    error_page,
    render,
    secured,
    see_other,
)
from coalition.web.gql import Runner
from coalition.web.sessions import create_session, csrf_ok, csrf_token, end_session
from ledger.timefmt import format_time_us, now_us

STATIC = Path(__file__).parent / "static"
READERS = ("auditor", "finance", "operator")
EVERYONE = ("partner", *READERS)
HOME = {
    "finance": "/runs",
    "auditor": "/checkpoints",
    "operator": "/keys",
    "partner": "/position",
}

PAGES: list[Page] = [
    Page("/runs", READERS, pages_finance.runs_list, title="Settlement runs", nav=True),
    Page("/runs", ("finance",), pages_finance.compute, ("POST",)),
    Page("/runs/{run_id}", READERS, pages_finance.run_page, examples={"run_id": "2026-01-r1"}),
    Page(
        "/runs/{run_id}/approve",
        ("finance",),
        pages_finance.approve,
        ("POST",),
        examples={"run_id": "2026-01-r1"},
    ),
    Page(
        "/runs/{run_id}/payments",
        ("finance",),
        pages_finance.confirm,
        ("POST",),
        examples={"run_id": "2026-01-r1"},
    ),
    Page(
        "/runs/{run_id}/payment-file",
        ("finance",),
        pages_finance.payment_file,
        examples={"run_id": "2026-01-r1"},
    ),
    Page(
        "/runs/{run_id}/statements/{party}/{format}",
        EVERYONE,
        pages_finance.statement,
        examples={"run_id": "2026-01-r1", "party": "grocer", "format": "pdf"},
    ),
    Page("/kpis", EVERYONE, pages_kpis.kpis, title="KPIs", nav=True),
    Page("/position", ("partner",), pages_partner.position, title="Position", nav=True),
    Page("/entries", ("partner",), pages_partner.entries, title="Entries", nav=True),
    Page("/entries/{seq}/receipt", EVERYONE, pages_partner.receipt, examples={"seq": "0"}),
    Page(
        "/reconciliation",
        ("partner",),
        pages_partner.reconcile_form,
        title="Reconciliation",
        nav=True,
    ),
    Page("/reconciliation", ("partner",), pages_partner.reconcile_upload, ("POST",)),
    Page("/checkpoints", READERS, pages_auditor.checkpoints, title="Checkpoints", nav=True),
    Page("/proof", READERS, pages_auditor.proof, title="Proofs", nav=True),
    Page("/export", ("auditor",), pages_auditor.export, title="Export", nav=True),
    Page("/partners", ("operator",), pages_operator.partners, title="Partners", nav=True),
    Page("/keys", ("operator",), pages_operator.keys, title="API keys", nav=True),
    Page("/keys", ("operator",), pages_operator.create_key, ("POST",)),
    Page(
        "/keys/{key_id}/revoke",
        ("operator",),
        pages_operator.revoke_key,
        ("POST",),
        examples={"key_id": "000000000000"},
    ),
]


def web_routes(state: dict[str, Any], graphql: Any) -> list[BaseRoute]:
    settings = state["settings"]
    runner = Runner(build_schema(development=settings.development), state)
    state["console_pages"] = PAGES
    secure = not settings.development
    limit = signin_limit.SigninLimit.from_env()

    async def root(request: Request) -> Response:
        return RedirectResponse(PREFIX + "/", status_code=307)

    async def home(request: Request) -> Response:
        from coalition.web.sessions import session_principal

        token = request.cookies.get(SESSION_COOKIE, "")
        principal = token and await state["database"].run(session_principal, token, now_us())
        if not principal:
            return see_other("/signin")
        return see_other(HOME[principal.role])

    async def signin_form(
        request: Request, status: int = 200, error: str = "", retry_at: str = ""
    ) -> Response:
        pre = secrets.token_urlsafe(32)
        response = render(
            "signin.html", status, csrf=csrf_token(pre), error=error, retry_at=retry_at
        )
        response.set_cookie(
            PRESESSION_COOKIE,
            pre,
            max_age=3600,
            path=PREFIX + "/signin",
            secure=secure,
            httponly=True,
            samesite="strict",
        )
        return response

    async def signin(request: Request) -> Response:
        form = await request.form()
        presented = form.get("csrf")
        pre = request.cookies.get(PRESESSION_COOKIE)
        if not csrf_ok(pre, presented if isinstance(presented, str) else None):
            return error_page(403, "This form is out of date (no valid CSRF token). Reload it.")
        key = str(form.get("api_key", "")).strip()
        client = request.client.host if request.client else "unknown"
        database = state["database"]
        attempt = await database.run(signin_limit.reserve, limit, client, now_us())
        if isinstance(attempt, signin_limit.Limited):
            return await _limited(request, attempt)
        principal = await state["api_keys"].authenticate(database, key)
        if principal is None:
            return await signin_form(request, 401, "That API key is not valid (or revoked).")
        # The right secret (of an expired key, or of a role without pages, too) is no guess.
        await database.run(signin_limit.succeeded, attempt)
        if isinstance(principal, KeyExpired):
            expired_at = format_time_us(principal.expired_at_us)
            message = f"That API key expired at {expired_at}; ask an operator for a new one."
            return await signin_form(request, 401, message)
        if principal.role not in HOME:
            return await signin_form(
                request, 403, f"A key of role {principal.role} has no pages in the console."
            )
        token = await database.run(create_session, principal, now_us())
        response = see_other(HOME[principal.role])
        response.set_cookie(
            SESSION_COOKIE,
            token,
            path=PREFIX,
            secure=secure,
            httponly=True,
            samesite="strict",
        )
        response.delete_cookie(PRESESSION_COOKIE, path=PREFIX + "/signin")
        return response

    async def _limited(request: Request, limited: signin_limit.Limited) -> Response:
        wait = limited.retry_after_seconds
        who = "from everyone" if limited.overall else "from your address"
        response = await signin_form(
            request,
            429,
            f"Too many failed sign-ins {who} in the last {_duration(limit.window_seconds)}."
            f" Try again in {_duration(wait)}.",
            retry_at=format_time_us((now_us() // 1_000_000 + wait) * 1_000_000),
        )
        response.headers["Retry-After"] = str(wait)
        return response

    async def signout(request: Request) -> Response:
        token = request.cookies.get(SESSION_COOKIE, "")
        form = await request.form()
        presented = form.get("csrf")
        if not csrf_ok(token, presented if isinstance(presented, str) else None):
            return error_page(403, "This form is out of date (no valid CSRF token). Reload it.")
        await state["database"].run(end_session, token, now_us())
        response = see_other("/signin")
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    _serve_graphiql_offline(graphql)
    routes: list[BaseRoute] = [
        Route("/", root),
        Route(PREFIX + "/", home),
        Route(PREFIX + "/signin", signin_form, methods=["GET"]),
        Route(PREFIX + "/signin", signin, methods=["POST"]),
        Route(PREFIX + "/signout", signout, methods=["POST"]),
        Mount(PREFIX + "/static", app=StaticFiles(directory=STATIC), name="console-static"),
    ]
    for page in PAGES:
        routes.append(
            Route(
                PREFIX + page.path, endpoint(page, runner, state, PAGES), methods=list(page.methods)
            )
        )
    return routes


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} seconds"
    return f"{-(-seconds // 60)} minutes"


def _serve_graphiql_offline(graphql: Any) -> None:
    """strawberry's GraphiQL page loads React and GraphiQL from a public CDN; ours loads
    the vendored copies, and its start-up script is a static file (the CSP allows no
    inline script)."""
    html = (STATIC / "graphiql.html").read_text(encoding="utf-8").replace("{{prefix}}", PREFIX)

    async def render_graphql_ide(request: Request) -> Response:
        response = HTMLResponse(html)
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline';"
            " img-src 'self' data:; font-src 'self' data:; connect-src 'self';"
            " frame-ancestors 'none'; base-uri 'none'"
        )
        return secured(response)

    graphql.render_graphql_ide = render_graphql_ide

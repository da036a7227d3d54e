"""What every console page shares: the session (cookie → principal), the role check, the
CSRF check of every POST, the security headers (a strict Content-Security-Policy: no
inline script, nothing from another origin) and rendering.

A page is declared once (``Page``) with the roles that may open it; ``routes.PAGES`` is
the list the app mounts and the browser tests walk, so a page cannot be added without
its roles being tested.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from coalition.api_keys import Principal
from coalition.settle import timezone
from coalition.web import format as fmt
from coalition.web.gql import PageError, Runner
from coalition.web.sessions import csrf_ok, csrf_token, session_principal
from ledger.timefmt import now_us

PREFIX = "/console"
SESSION_COOKIE = "console_session"
PRESESSION_COOKIE = "console_presession"  # the sign-in form's CSRF, before any session
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none';"
    " base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",  # pages carry a partner's figures, a new key
}
_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_TEMPLATES.filters["points"] = fmt.points
_TEMPLATES.filters["money"] = fmt.money
_TEMPLATES.filters["local_time"] = lambda text: fmt.local_time(text, timezone())


@dataclass
class Ctx:
    """One request to a page: who, the CSRF token for its forms, and the data runner."""

    request: Request
    principal: Principal
    token: str
    runner: Runner
    state: dict[str, Any]

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)

    async def gql(self, document: str, **variables: Any) -> dict[str, Any]:
        return await self.runner.run(self.principal, document, variables)

    async def db(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.state["database"].run(fn, *args)

    def render(self, template: str, http_status: int = 200, **values: Any) -> Response:
        nav = menu_for(self.principal, self.state["console_pages"])
        return render(
            template, http_status, principal=self.principal, csrf=self.csrf, nav=nav, **values
        )


Handler = Callable[[Ctx], Awaitable[Response]]


@dataclass(frozen=True)
class Page:
    path: str  # under PREFIX; {params} as Starlette spells them
    roles: tuple[str, ...]
    handler: Handler
    methods: tuple[str, ...] = ("GET",)
    title: str = ""
    nav: bool = False  # in the menu of its roles
    examples: dict[str, str] = field(default_factory=dict)  # a value for each path param


def render(template: str, http_status: int = 200, **values: Any) -> Response:
    values.setdefault("principal", None)
    values.setdefault("csrf", "")
    values.setdefault("nav", [])
    html = _TEMPLATES.get_template(template).render(prefix=PREFIX, zone=timezone(), **values)
    return secured(HTMLResponse(html, status_code=http_status))


def secured(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def error_page(status: int, message: str, principal: Principal | None = None) -> Response:
    return render("error.html", status, status=status, message=message, principal=principal)


def see_other(path: str) -> Response:
    return secured(RedirectResponse(PREFIX + path, status_code=303))


def endpoint(page: Page, runner: Runner, state: dict[str, Any], menu: list[Page]) -> Any:
    """The Starlette endpoint of a page: session, role, CSRF, then the handler."""

    async def serve(request: Request) -> Response:
        token = request.cookies.get(SESSION_COOKIE, "")
        principal = None
        if token:
            principal = await state["database"].run(session_principal, token, now_us())
        if principal is None:
            if request.method == "GET":
                return see_other("/signin")
            return error_page(401, "Your session has ended. Sign in again with your API key.")
        if principal.role not in page.roles:
            return error_page(403, "Your role may not open this page.", principal)
        if request.method == "POST":
            form = await request.form()
            presented = form.get("csrf")
            if not csrf_ok(token, presented if isinstance(presented, str) else None):
                return error_page(
                    403,
                    "This form is out of date (no valid CSRF token). Reload and try again.",
                    principal,
                )
        ctx = Ctx(request, principal, token, runner, state)
        try:
            response = await page.handler(ctx)
        except PageError as exc:
            return error_page(exc.status, exc.message, principal)
        return secured(response)

    return serve


def menu_for(principal: Principal, pages: list[Page]) -> list[Page]:
    return [p for p in pages if p.nav and principal.role in p.roles]

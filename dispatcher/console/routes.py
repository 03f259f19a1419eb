"""Console pages of the alerts: sign-in, the list, compose, approvals, the live tree.

The pages are shells: console.js fills them from the JSON API with the session cookie, so a
page shows exactly what the API lets its person see. ``page_guard`` sends anyone not signed
in to /login and hands every template its language, person and office."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from dispatcher.console.i18n import lang_of, remember_lang
from dispatcher.core.errors import EbdError
from dispatcher.http.principal import SESSION_COOKIE, person_of, session_csrf
from dispatcher.http.requests import OFFICE

routes = web.RouteTableDef()

# The console's pages: every path the guard protects starts with one of these.
PAGE_PREFIXES = ("/alerts", "/approvals", "/terminals", "/drills", "/people", "/templates")
LOGIN = "/login"

# What the guard found for a page: its language, person, office and CSRF token.
PAGE = web.RequestKey("console_page", dict[str, Any])

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_page(request: web.Request) -> bool:
    if request.match_info.http_exception is not None:
        return False
    path = request.path
    return path == LOGIN or any(
        path == prefix or path.startswith(prefix + "/") for prefix in PAGE_PREFIXES
    )


def _signed_in(request: web.Request) -> bool:
    """Whether a person's session (or a person's token) stands behind the request. Without a
    cookie or a header nothing is tried, so a first visit is no failed authentication."""
    if SESSION_COOKIE not in request.cookies and "Authorization" not in request.headers:
        return False
    try:
        return person_of(request) is not None
    except EbdError:
        return False


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this site only (never ``//host`` nor
    ``https://…``, which would make the sign-in page an open redirect)."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 0x20 for c in target)
    ):
        return "/alerts"
    return target


@web.middleware
async def page_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not _is_page(request):
        return await handler(request)
    signed_in = _signed_in(request)
    if not signed_in and request.path != LOGIN:
        raise web.HTTPFound(f"{LOGIN}?next={quote(request.path_qs, safe='')}")
    context: dict[str, Any] = {
        "lang": lang_of(request),
        "person": None,
        "office": None,
        "csrf": "",
        "active": "",
    }
    if signed_in:
        person = person_of(request)
        context["person"] = person
        context["office"] = request[OFFICE]
        context["csrf"] = _csrf_of(request)
    request[PAGE] = context
    response = await handler(request)
    remember_lang(request, response)
    # A page holds the person's name and alert texts: no shared cache keeps it.
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
    return response


_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


def _csrf_of(request: web.Request) -> str:
    # A person's API token has none: console.js then asks GET /api/v1/me.
    return session_csrf(request) or ""


def render(request: web.Request, template: str, active: str, **context: Any) -> web.Response:
    """A console page: ``active`` names its entry in the header's navigation. No inline
    script or style runs on it: a text that slipped through escaping still could not act."""
    page = {**request.get(PAGE, {}), "active": active, **context}
    response = aiohttp_jinja2.render_template(template, request, page)
    response.headers["Content-Security-Policy"] = _CSP
    return response


@routes.get("/")
async def home(request: web.Request) -> web.Response:
    raise web.HTTPFound("/alerts")


@routes.get(LOGIN)
async def login_page(request: web.Request) -> web.Response:
    target = safe_next(request.query.get("next"))
    if _signed_in(request):
        raise web.HTTPFound(target)
    return render(request, "login.html", "login", next=target)


@routes.get("/alerts")
async def alerts_page(request: web.Request) -> web.Response:
    return render(request, "alerts.html", "alerts")


@routes.get("/alerts/new")
async def alert_new_page(request: web.Request) -> web.Response:
    # ?update=<id> starts from that alert's texts and areas (the "Update" button).
    return render(request, "alert_new.html", "new", update=request.query.get("update", "")[:80])


@routes.get("/alerts/{alert_id}")
async def alert_page(request: web.Request) -> web.Response:
    return render(
        request, "alert.html", "alerts", page="alert", alert_id=request.match_info["alert_id"][:80]
    )


@routes.get("/approvals")
async def approvals_page(request: web.Request) -> web.Response:
    return render(request, "approvals.html", "approvals")

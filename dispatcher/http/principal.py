"""Who is calling: the office (always) and the person (when a person, not a machine, did).

``auth_middleware`` resolves every request's credential once, before its handler runs:

- ``Authorization: Bearer ebdp_…``: a person's API token (looked up in Redis by its SHA-256);
- ``Authorization: Bearer …``: an office's token (a machine, e.g. a linked release system);
- the console's ``ebd_session`` cookie: a signed-in person. An unsafe method (POST, PUT,
  PATCH, DELETE) sent with the cookie alone also needs ``X-CSRF-Token``, the session's token:
  a page of another site can make a browser send the cookie, never that header.

It refuses nothing itself: ``office_of`` raises what it found when a handler asks who is
calling, so public endpoints (health, receipts, the login page) stay public. A disabled person,
a revoked token or an ended session is refused on the next request: each one reads Redis.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from dispatcher.core.auth import Office
from dispatcher.core.errors import EbdError, Forbidden, Unauthorized
from dispatcher.core.people import ROLE_LABELS, Person, Role
from dispatcher.http.middleware import Handler
from dispatcher.http.requests import AUTH, PERSON, Auth, office_of
from dispatcher.http.state import OFFICES, STORE
from dispatcher.store.people import TOKEN_PREFIX

__all__ = ["CSRF_HEADER", "PERSON", "SESSION_COOKIE", "person_of", "require_role"]

SESSION_COOKIE = "ebd_session"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class CsrfRefused(Forbidden, code="csrf"):
    """A cookie-signed request that changes something came without the session's CSRF token."""


def person_of(request: web.Request) -> Person | None:
    """The person behind the request; None when an office bearer token (a machine) sent it."""
    office_of(request)
    return request.get(PERSON)


def require_role(request: web.Request, *roles: Role) -> Office:
    """The request's office, once its person holds one of ``roles`` (a machine passes)."""
    office = office_of(request)
    person = request.get(PERSON)
    if person is not None and not person.has(*roles):
        needed = " or ".join(f"{r.value} ({ROLE_LABELS[r][0]})" for r in roles)
        raise Forbidden(
            f"{person.id} ({person.name}) lacks the role this needs: {needed}; "
            "ask your office's administrator"
        )
    return office


def session_csrf(request: web.Request) -> str | None:
    """The CSRF token of the console session the request came with (None without one)."""
    found = request.get(AUTH)
    return None if found is None else found.session_csrf


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        request[AUTH] = await _authenticate(request)
    except EbdError as exc:
        # Redis down while looking a person up: the handler's ``office_of`` answers 503, a
        # public endpoint still works.
        request[AUTH] = Auth(error=exc)
    return await handler(request)


def _person_office(request: web.Request, person: Person | None, what: str) -> Office:
    if person is None:
        raise Unauthorized(f"unknown or revoked {what}: ask your office's administrator")
    if person.disabled:
        raise Unauthorized(f"the account {person.id} is disabled: ask your office's administrator")
    office = request.app[OFFICES].get(person.office_id)
    if office is None:
        raise Unauthorized(f"the office {person.office_id} of {person.id} is no longer configured")
    return office


async def _authenticate(request: web.Request) -> Auth:
    header = request.headers.get("Authorization")
    if header:
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token.startswith(TOKEN_PREFIX):
            if not token.isascii() or not token.isprintable() or len(token) > 200:
                return Auth(error=Unauthorized("the bearer token must be visible ASCII characters"))
            try:
                person = await request.app[STORE].people.by_token(token)
                return Auth(_person_office(request, person, "API token"), person)
            except Unauthorized as exc:
                return Auth(error=exc)
        try:
            return Auth(request.app[OFFICES].authenticate(header))
        except Unauthorized as exc:
            return Auth(error=exc)
    sid = request.cookies.get(SESSION_COOKIE)
    if not sid:
        return Auth(
            error=Unauthorized(
                "missing Authorization header: send 'Authorization: Bearer <token>', "
                "or sign in at /login"
            )
        )
    if not sid.isascii() or not sid.isprintable() or len(sid) > 200:
        return Auth(error=Unauthorized("malformed session cookie: sign in again at /login"))
    session = await request.app[STORE].people.session(sid)
    if session is None:
        return Auth(
            error=Unauthorized(
                "your session has ended (signed out, expired or the password changed): "
                "sign in again at /login"
            )
        )
    try:
        office = _person_office(request, session.person, "session")
    except Unauthorized as exc:
        return Auth(error=exc)
    if request.method in UNSAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode("utf-8", "replace"), session.csrf.encode()):
            return Auth(
                error=CsrfRefused(
                    f"missing or wrong {CSRF_HEADER} header: a change made with the session cookie "
                    "needs the page's CSRF token (reload the page and try again)"
                )
            )
    return Auth(office, session.person, session.csrf)

"""What every handler needs from a request: the office behind its token, its JSON body, its
query parameters, and the alert it names if this office may see it."""

from __future__ import annotations

import json
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from dispatcher.core.auth import AuthThrottle, Office
from dispatcher.core.clock import localized
from dispatcher.core.errors import (
    BadRequest,
    EbdError,
    Forbidden,
    NotFound,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from dispatcher.core.models import Alert
from dispatcher.core.people import Person
from dispatcher.http.state import API, OFFICES, STORE

log = structlog.get_logger(__name__)


async def read_json(request: web.Request, *, optional: bool = False) -> Any:
    if optional and not request.can_read_body:
        return None
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"send a JSON body with 'Content-Type: application/json' "
            f"(got {request.content_type or 'none'!r})"
        )
    raw = await request.read()
    # Only JSON's own whitespace counts as no body: bytes.strip() would also take a vertical
    # tab or a form feed, which no JSON parser accepts.
    if optional and not raw.strip(b" \t\n\r"):
        return None
    return parse_json(raw)


def parse_json(raw: bytes) -> Any:
    """A request body's JSON; ``BadRequest`` saying what is wrong with it."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad JSON, bad UTF-8 and integers too long to convert.
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc
    if b"\\u" in raw:
        _refuse_lone_surrogates(value)
    return value


def _refuse_lone_surrogates(value: Any) -> None:
    """JSON may escape half of a UTF-16 surrogate pair (``"\\ud800"``); such a string is no
    Unicode text, cannot be encoded (to hash, store or log) and is refused as a bad body."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest(
            'the body holds a lone UTF-16 surrogate escape (e.g. "\\ud800"); '
            "send valid Unicode text"
        ) from exc


# The office behind the request, once ``office_of`` found it: what the audit log records.
OFFICE = web.RequestKey("office", Office)
# The person behind it, when a person (not an office's machine token) sent it.
PERSON = web.RequestKey("person", Person)


@dataclass(frozen=True, slots=True)
class Auth:
    """What the authentication middleware (``dispatcher.http.principal``) found for a request:
    its office and person, or the error ``office_of`` raises when a handler asks for them."""

    office: Office | None = None
    person: Person | None = None
    # The console session the request came with (its CSRF token), if the cookie signed it in.
    session_csrf: str | None = None
    error: EbdError | None = None


AUTH = web.RequestKey("auth", Auth)


# One throttle of failed authentications per application (per engine process).
_THROTTLES: weakref.WeakKeyDictionary[web.Application, AuthThrottle] = weakref.WeakKeyDictionary()
DEFAULT_AUTH_FAILURES_PER_MINUTE = 20


def auth_throttle(app: web.Application) -> AuthThrottle:
    throttle = _THROTTLES.get(app)
    if throttle is None:
        api = app.get(API)
        limit = api.auth_failures_per_minute if api else DEFAULT_AUTH_FAILURES_PER_MINUTE
        throttle = _THROTTLES[app] = AuthThrottle(limit)
    return throttle


def source_of(request: web.Request) -> str:
    """The peer address the throttle counts (the TCP peer: forwarded headers are not
    trusted, so a proxy in front counts as one source)."""
    return request.remote or "unknown"


def auth_failed(request: web.Request, reason: str) -> None:
    """Log and count a failed authentication: the source, the path, why, how many failures
    this minute; never the token, nor anything derived from it."""
    throttle = auth_throttle(request.app)
    source = source_of(request)
    failures = throttle.failed(source)
    log.warning(
        "auth.failed",
        source=source,
        method=request.method,
        path=request.path,
        reason=reason,
        failures_this_minute=failures,
        throttled=failures >= throttle.limit,
    )


def office_of(request: web.Request) -> Office:
    """The office behind the request (a person's, for a person's token or session), or the
    error its authentication ended in: 401 for a missing, unknown or revoked credential."""
    found = request.get(AUTH)
    if found is None:
        # A request the middleware did not see: office tokens are all it can carry then.
        try:
            found = Auth(request.app[OFFICES].authenticate(request.headers.get("Authorization")))
        except Unauthorized as exc:
            found = Auth(error=exc)
    if found.error is not None:
        if isinstance(found.error, Unauthorized):
            auth_failed(request, found.error.message)
        raise found.error
    office = found.office
    if office is None:  # pragma: no cover - an Auth has its office or its error
        raise Unauthorized("the request's credential named no office")
    request[OFFICE] = office
    if found.person is not None:
        request[PERSON] = found.person
        structlog.contextvars.bind_contextvars(person=found.person.id)
    # Each request runs in its own task, so this binding ends with the request.
    structlog.contextvars.bind_contextvars(office=office.id)
    return office


async def visible_alert(request: web.Request, office: Office, alert_id: str | None = None) -> Alert:
    if alert_id is None:
        alert_id = request.match_info["alert_id"]
    alert = await request.app[STORE].get_alert(alert_id) if len(alert_id) <= 80 else None
    if alert is None:
        raise NotFound(f"no alert {alert_id!r}")
    if not request.app[OFFICES].can_see(office, alert.areas):
        # Not a 404: the id is not secret, but this office has no business with it.
        raise Forbidden(
            f"alert {alert_id} does not concern region {office.region}", region_codes=alert.areas
        )
    return alert


def parse_int(
    request: web.Request,
    name: str,
    default: int,
    low: int,
    high: int,
    *,
    error: type[ValidationFailed] | type[BadRequest] = ValidationFailed,
) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise error(
            f"query parameter {name} must be an integer from {low} to {high}",
            details=[{"field": name, "message": f"got {raw!r}"}],
        )
    return int(raw)


def query_choice(
    request: web.Request, name: str, choices: Sequence[str], default: str | None = None
) -> str | None:
    """A query parameter that must be one of ``choices`` (``default`` when absent)."""
    value = request.query.get(name, default)
    if value is not None and value not in choices:
        raise ValidationFailed(
            f"{name} must be one of {', '.join(choices)}",
            details=[{"field": name, "message": f"got {value!r}"}],
        )
    return value


def dumps(value: Any) -> str:
    """A response body; its times shown in the display zone (``dispatcher.core.clock``)."""
    return json.dumps(localized(value), ensure_ascii=False)


def accept_query(request: web.Request, *names: str) -> None:
    """Refuse (400) a query parameter that is not one of ``names``, or one given twice: an
    ignored filter would pass an unfiltered list off as the filtered one."""
    accepted = sorted(names)
    for name in request.query:
        twice = name in names and len(request.query.getall(name)) > 1
        if name in names and not twice:
            continue
        shown = name if len(name) <= 64 else name[:64] + "…"
        what = "given more than once" if twice else "unknown query parameter"
        raise BadRequest(
            f"{what} {shown!r}; this endpoint accepts "
            + (", ".join(accepted) if accepted else "no query parameters"),
            details=[{"field": shown, "message": what, "accepted": accepted}],
        )


def province_office(request: web.Request, what: str) -> Office:
    """The request's office if it is a province's; else ``Forbidden`` saying ``what`` is for
    province offices only."""
    office = office_of(request)
    if len(office.region) != 2:
        raise Forbidden(
            f"{what} is for province offices; office {office.id} is at region {office.region}",
            region_codes=[office.region],
        )
    return office


def parse_time(
    request: web.Request,
    name: str,
    *,
    error: type[ValidationFailed] | type[BadRequest] = ValidationFailed,
) -> datetime | None:
    """The query parameter ``name`` as an aware time, None if absent; ``error`` saying the
    form to use if it is not ISO 8601 with an offset."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value: datetime | None = datetime.fromisoformat(raw)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise error(
            f"{name} must be an ISO 8601 time with its offset, e.g. 2027-03-01T00:00:00+08:00 "
            "(write + as %2B in a URL)",
            details=[{"field": name, "message": f"got {raw!r}"}],
        )
    return value

"""The accounts API: signing in and out (``/api/v1/session``), who am I (``/api/v1/me``),
and an office's people (``/api/v1/people``): create, disable, enable, set a password, issue
and revoke API tokens.

An office's people are managed by its admins and by the office's own token (which is how the
first admin is made); never by another office. Passwords are taken, hashed and forgotten: no
answer, log line or audit record holds one.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from dispatcher.core.audit import AuditAction
from dispatcher.core.auth import Office
from dispatcher.core.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from dispatcher.core.passwords import DUMMY_HASH, hash_password, verify_password
from dispatcher.core.people import (
    ROLE_LABELS,
    LoginIn,
    PasswordIn,
    Person,
    PersonIn,
    Role,
    login_problem,
)
from dispatcher.core.validation import invalid
from dispatcher.http.audit import audit
from dispatcher.http.principal import (
    PERSON,
    SESSION_COOKIE,
    person_of,
    require_role,
    session_csrf,
)
from dispatcher.http.requests import (
    AUTH,
    accept_query,
    auth_failed,
    dumps,
    office_of,
    read_json,
)
from dispatcher.http.state import API, OFFICES, STORE, TREE
from dispatcher.store.people import StoredPerson

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()
M = TypeVar("M", bound=BaseModel)


def person_json(person: Person, stored: StoredPerson | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": person.id,
        "name": person.name,
        "office_id": person.office_id,
        "roles": sorted(r.value for r in person.roles),
        "disabled": person.disabled,
    }
    if stored is not None:
        body["created_at"] = stored.created_at
        body["created_by"] = stored.created_by
    return body


async def _body(request: web.Request, model: type[M]) -> M:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise invalid(exc) from exc


async def _no_body(request: web.Request) -> None:
    """Refuse a body on an action that takes none, but an empty object (what scripts send)."""
    body = await read_json(request, optional=True)
    if body not in (None, {}):
        raise ValidationFailed(
            "this action takes no body (or an empty JSON object)",
            details=[{"field": "body", "message": "not empty"}],
        )


def _actor(request: web.Request) -> str:
    """Who did it, for a record's ``created_by``: the person, or the office's token."""
    person = request.get(PERSON)
    return person.id if person is not None else f"office:{office_of(request).id}"


async def _managed(request: web.Request, office: Office) -> StoredPerson:
    """The person the path names, if they belong to ``office`` (the caller's)."""
    person_id = request.match_info["person_id"]
    stored = None
    if login_problem(person_id) is None:
        stored = await request.app[STORE].people.get(person_id)
    if stored is None:
        raise NotFound(f"no person {person_id[:64]!r}: list your office's people first")
    if stored.person.office_id != office.id:
        raise Forbidden(
            f"{person_id} belongs to office {stored.person.office_id}; only that office's "
            "administrators manage them"
        )
    return stored


def _admin_or_self(request: web.Request) -> tuple[Office, bool]:
    """The caller's office, and whether the caller is the person the path names (who may
    manage their own password and tokens without being an admin)."""
    office = office_of(request)
    person = request.get(PERSON)
    if person is not None and person.id == request.match_info["person_id"]:
        return office, True
    return require_role(request, Role.ADMIN), False


# Sessions ------------------------------------------------------------------------------------


@routes.post("/api/v1/session")
async def login(request: web.Request) -> web.Response:
    """Sign in with a login id and password: the session cookie and its CSRF token."""
    accept_query(request)
    body = await _body(request, LoginIn)
    stored = None
    if login_problem(body.login) is None:
        stored = await request.app[STORE].people.get(body.login)
    # An unknown login costs the same hashing as a wrong password: timing tells nothing.
    ok = await asyncio.to_thread(
        verify_password, body.password, stored.password_hash if stored else DUMMY_HASH
    )
    if stored is None or not ok:
        auth_failed(request, "wrong login or password")
        raise Unauthorized("wrong login id or password")
    person = stored.person
    if person.disabled:
        auth_failed(request, "disabled account")
        raise Unauthorized(f"the account {person.id} is disabled: ask your office's administrator")
    office = request.app[OFFICES].get(person.office_id)
    if office is None:
        raise Unauthorized(f"the office {person.office_id} of {person.id} is no longer configured")
    seconds = round(request.app[API].session_hours * 3600)
    sid, csrf = await request.app[STORE].people.open_session(person.id, seconds)
    log.info("session.login", person=person.id, office=office.id)
    response = web.json_response({"person": person_json(person, stored), "csrf": csrf})
    response.set_cookie(
        SESSION_COOKIE,
        sid,
        max_age=seconds,
        path="/",
        httponly=True,
        samesite="Strict",
        # Behind TLS (the engine's own, or a proxy that says so to aiohttp) only.
        secure=request.secure,
    )
    return response


@routes.delete("/api/v1/session")
async def logout(request: web.Request) -> web.Response:
    """Sign out: the session ends on every instance at once; the cookie is cleared."""
    accept_query(request)
    sid = request.cookies.get(SESSION_COOKIE)
    found = request.get(AUTH)
    if sid and found is not None and not isinstance(found.error, Unauthorized):
        # A live session: ``office_of`` refuses a logout without the page's CSRF token, so a
        # foreign page cannot sign a person out either. An ended one just loses its cookie.
        office_of(request)
        await request.app[STORE].people.close_session(sid)
    response = web.json_response({"signed_out": True})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@routes.get("/api/v1/me")
async def me(request: web.Request) -> web.Response:
    """Who the credential is: the person (null for an office token), their office, roles and,
    for a console session, the CSRF token its pages send."""
    accept_query(request)
    office = office_of(request)
    person = person_of(request)
    tree = request.app[TREE]
    roles = sorted(r.value for r in person.roles) if person else []
    return web.json_response(
        {
            "person": None if person is None else person_json(person),
            "office": {
                "id": office.id,
                "name": office.name,
                "region": office.region,
                "region_name": tree.name(office.region),
            },
            "roles": roles,
            "role_labels": {r: list(ROLE_LABELS[Role(r)]) for r in roles},
            "csrf": session_csrf(request),
        },
        dumps=dumps,
    )


# People --------------------------------------------------------------------------------------


@routes.get("/api/v1/people")
async def list_people(request: web.Request) -> web.Response:
    """The office's people with their API tokens (ids only); admins and the office token."""
    accept_query(request)
    office = require_role(request, Role.ADMIN)
    people = request.app[STORE].people
    listed = []
    for stored in await people.of_office(office.id):
        entry = person_json(stored.person, stored)
        entry["tokens"] = await people.tokens(stored.person.id)
        listed.append(entry)
    return web.json_response({"office": office.id, "people": listed}, dumps=dumps)


@routes.post("/api/v1/people")
async def create_person(request: web.Request) -> web.Response:
    """A new person of the caller's office (201); an admin makes people of their own office
    only, whatever roles."""
    accept_query(request)
    office = require_role(request, Role.ADMIN)
    body = await _body(request, PersonIn)
    if body.office is not None and body.office != office.id:
        raise Forbidden(
            f"office {office.id} may only create people of its own; {body.office!r} is another "
            "office: ask its administrator"
        )
    person = Person(body.id, body.name, office.id, frozenset(body.roles))
    hashed = await asyncio.to_thread(hash_password, body.password)
    stored = await request.app[STORE].people.create(person, hashed, by=_actor(request))
    await audit(
        request,
        AuditAction.PERSON_CREATE,
        f"person:{person.id}",
        {"name": person.name, "roles": sorted(r.value for r in person.roles)},
    )
    return web.json_response({"person": person_json(person, stored)}, status=201, dumps=dumps)


async def _set_disabled(request: web.Request, disabled: bool) -> web.Response:
    accept_query(request)
    office = require_role(request, Role.ADMIN)
    await _no_body(request)
    target = await _managed(request, office)
    caller = request.get(PERSON)
    if disabled and caller is not None and caller.id == target.person.id:
        raise Conflict("you cannot disable your own account; ask another administrator")
    stored = await request.app[STORE].people.set_disabled(target.person.id, disabled)
    action = AuditAction.PERSON_DISABLE if disabled else AuditAction.PERSON_ENABLE
    await audit(request, action, f"person:{target.person.id}")
    return web.json_response({"person": person_json(stored.person, stored)}, dumps=dumps)


@routes.post("/api/v1/people/{person_id}/disable")
async def disable_person(request: web.Request) -> web.Response:
    """Disable a person: their sessions end and their tokens stop working at once."""
    return await _set_disabled(request, True)


@routes.post("/api/v1/people/{person_id}/enable")
async def enable_person(request: web.Request) -> web.Response:
    return await _set_disabled(request, False)


@routes.post("/api/v1/people/{person_id}/password")
async def set_password(request: web.Request) -> web.Response:
    """A new password: an admin sets anyone's of the office; a person their own, giving the
    current one. Every session of the person ends (they sign in again)."""
    accept_query(request)
    office, own = _admin_or_self(request)
    body = await _body(request, PasswordIn)
    target = await _managed(request, office)
    if own:
        # Even an admin gives their current password: a cookie left signed in on a shared
        # screen must not be enough to take the account over.
        if body.current is None:
            raise ValidationFailed(
                "give your current password in 'current' to change it",
                details=[{"field": "current", "message": "required"}],
            )
        if not await asyncio.to_thread(verify_password, body.current, target.password_hash):
            auth_failed(request, "wrong current password")
            raise Unauthorized("the current password is wrong")
    hashed = await asyncio.to_thread(hash_password, body.password)
    stored = await request.app[STORE].people.set_password(target.person.id, hashed)
    await audit(request, AuditAction.PERSON_PASSWORD, f"person:{target.person.id}")
    return web.json_response({"person": person_json(stored.person, stored)}, dumps=dumps)


@routes.post("/api/v1/people/{person_id}/tokens")
async def issue_token(request: web.Request) -> web.Response:
    """A new API token of the person (admins, or the person): shown once, in this answer."""
    accept_query(request)
    office, _own = _admin_or_self(request)
    await _no_body(request)
    target = await _managed(request, office)
    if target.person.disabled:
        raise Conflict(f"{target.person.id} is disabled: enable the account first")
    token_id, token = await request.app[STORE].people.issue_token(target.person.id)
    await audit(
        request,
        AuditAction.PERSON_TOKEN_ISSUE,
        f"person:{target.person.id}",
        {"token_id": token_id},
    )
    return web.json_response(
        {"person": target.person.id, "id": token_id, "token": token}, status=201, dumps=dumps
    )


@routes.delete("/api/v1/people/{person_id}/tokens/{token_id}")
async def revoke_token(request: web.Request) -> web.Response:
    """Revoke one of the person's API tokens: it stops working at once."""
    accept_query(request)
    office, _own = _admin_or_self(request)
    target = await _managed(request, office)
    token_id = request.match_info["token_id"]
    if len(token_id) > 64:
        raise NotFound(f"{target.person.id} has no API token {token_id[:64]!r}")
    await request.app[STORE].people.revoke_token(target.person.id, token_id)
    await audit(
        request,
        AuditAction.PERSON_TOKEN_REVOKE,
        f"person:{target.person.id}",
        {"token_id": token_id},
    )
    return web.json_response({"person": target.person.id, "revoked": token_id}, dumps=dumps)

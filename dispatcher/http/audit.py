"""``/api/v1/audit``: the audit log for province offices (query, export, verify), and ``audit``,
which every state-changing handler calls once its change is accepted."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiohttp import web

from dispatcher.core.audit import AuditAction, AuditRecord
from dispatcher.core.auth import Office
from dispatcher.core.errors import BadRequest
from dispatcher.http.requests import (
    OFFICE,
    PERSON,
    accept_query,
    dumps,
    office_of,
    parse_int,
    parse_time,
    province_office,
)
from dispatcher.http.state import STORE

routes = web.RouteTableDef()

MAX_LIMIT = 1000
_ACTIONS = [a.value for a in AuditAction]


async def audit(
    request: web.Request,
    action: AuditAction,
    target: str,
    detail: Mapping[str, Any] | None = None,
) -> AuditRecord | None:
    """Record ``action`` on ``target`` by the request's office, from the client's address.

    Call it after the change was stored. If Redis refuses the record, the store logs an error
    and counts it but this returns normally (None): the change has happened, and failing the
    request would not undo it (see ``AuditStore.record``)."""
    office = request.get(OFFICE) or office_of(request)
    person = request.get(PERSON)
    # The peer's address, not X-Forwarded-For: that header is whatever the client says.
    return await request.app[STORE].audit.record(
        office=office.id,
        person=None if person is None else person.id,  # None: the office's machine token
        source=request.remote,
        action=action,
        target=target,
        detail=detail,
    )


def _province_office(request: web.Request) -> Office:
    return province_office(request, "the audit log (ask the province office for an export)")


def _time(request: web.Request, name: str) -> datetime | None:
    return parse_time(request, name, error=BadRequest)


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    return parse_int(request, name, default, low, high, error=BadRequest)


def _range(request: web.Request) -> tuple[datetime | None, datetime | None]:
    since, until = _time(request, "since"), _time(request, "until")
    if since is not None and until is not None and since > until:
        raise BadRequest(
            "since is after until: swap them",
            details=[{"field": "since", "message": f"{since.isoformat()} > {until.isoformat()}"}],
        )
    return since, until


@routes.get("/api/v1/audit")
async def query(request: web.Request) -> web.Response:
    """Records by time range, office and action, oldest first, a page at a time: follow
    ``next`` (``after`` the last seq looked at) until it is null."""
    _province_office(request)
    accept_query(request, "since", "until", "action", "office", "limit", "after")
    since, until = _range(request)
    action = request.query.get("action")
    if action is not None and action not in _ACTIONS:
        raise BadRequest(
            f"action must be one of {', '.join(_ACTIONS)}",
            details=[{"field": "action", "message": f"got {action!r}"}],
        )
    office = request.query.get("office")
    if office is not None and not 0 < len(office) <= 64:
        raise BadRequest(
            "office must be an office id of 1 to 64 characters",
            details=[{"field": "office", "message": "empty or too long"}],
        )
    limit = _int(request, "limit", 100, 1, MAX_LIMIT)
    after = _int(request, "after", 0, 0, 2**62)
    records, cursor = await request.app[STORE].audit.query(
        since=since, until=until, office=office, action=action, after=after, limit=limit
    )
    next_link = None
    if cursor is not None:
        next_link = str(request.rel_url.update_query({"after": str(cursor)}))
    return web.json_response(
        {
            "records": [r.as_json() for r in records],
            "count": len(records),
            "next_after": cursor,
            "next": next_link,
        },
        dumps=dumps,
    )


@routes.get("/api/v1/audit/export")
async def export(request: web.Request) -> web.StreamResponse:
    """The log (or a time range of it) as NDJSON, one record a line, streamed."""
    _province_office(request)
    accept_query(request, "since", "until")
    since, until = _range(request)
    store = request.app[STORE]
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-ndjson; charset=utf-8",
            "Content-Disposition": 'attachment; filename="audit.ndjson"',
        }
    )
    await response.prepare(request)
    async for page in store.audit.export(since=since, until=until):
        await response.write("".join(r.to_json() + "\n" for r in page).encode("utf-8"))
    await response.write_eof()
    return response


@routes.get("/api/v1/audit/verify")
async def verify(request: web.Request) -> web.Response:
    """Walk the whole chain: ok, or each edited, missing, relinked or truncated record."""
    _province_office(request)
    accept_query(request)
    result = await request.app[STORE].audit.verify()
    return web.json_response(
        {
            "ok": result.ok,
            "records": result.records,
            "head": {"seq": result.head.seq, "hash": result.head.hash},
            "problem_count": len(result.problems),
            "problems": [p.as_json() for p in result.problems[:MAX_LIMIT]],
        },
        dumps=dumps,
    )

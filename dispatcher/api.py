"""HTTP handlers of the v1 API. Handlers stay free of error plumbing: the middleware in
``app.py`` turns ``EbdError`` into the JSON error body with its status."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from dispatcher.auth import Office, Offices
from dispatcher.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    RegionError,
    UnknownRegion,
    UnsupportedMediaType,
    ValidationFailed,
)
from dispatcher.keys import OFFICES, SMS, STORE, TREE
from dispatcher.models import (
    Alert,
    AlertRequest,
    CancelRequest,
    Channel,
    MsgType,
    TerminalIn,
    utcnow,
)
from dispatcher.regions import Level, RegionTree
from dispatcher.store import Delivery, Store
from dispatcher.validation import invalid, refuse_rows, validation_details

MAX_TERMINALS_PER_REQUEST = 20_000
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()


async def read_json(request: web.Request, *, optional: bool = False) -> Any:
    if optional and not request.can_read_body:
        return None
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"send a JSON body with 'Content-Type: application/json' "
            f"(got {request.content_type or 'none'!r})"
        )
    raw = await request.read()
    if optional and not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad JSON, bad UTF-8 and integers too long to convert.
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc


def office_of(request: web.Request) -> Office:
    office = request.app[OFFICES].authenticate(request.headers.get("Authorization"))
    # Each request runs in its own task, so this binding ends with the request.
    structlog.contextvars.bind_contextvars(office=office.id)
    return office


def _check_areas(tree: RegionTree, offices: Offices, office: Office, areas: list[str]) -> list[str]:
    """Validate region codes (422 naming the code) and jurisdiction (403); the minimal cover."""
    for code in areas:
        tree.get(code)
    offices.require_within(office, areas)
    return tree.cover(areas)


def alert_json(alert: Alert, tree: RegionTree) -> dict[str, Any]:
    body = alert.model_dump(mode="json")
    body["severity_cap"] = alert.severity.cap
    body["severity_label"] = alert.severity.label_zh
    body["area_names"] = {code: tree.name(code) for code in alert.areas if code in tree}
    body["links"] = {
        "self": f"/api/v1/alerts/{alert.id}",
        "cancel": f"/api/v1/alerts/{alert.id}/cancel",
    }
    return body


def _canonical(body: Any) -> str:
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    ).hexdigest()


def _idempotency(request: web.Request, body: Any) -> tuple[str, str] | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.match(key):
        raise ValidationFailed(
            "Idempotency-Key must be 1 to 128 visible ASCII characters, e.g. a UUID",
            details=[{"field": "Idempotency-Key", "message": "malformed"}],
        )
    return key, _canonical(body)


async def _replay(request: web.Request, office: Office, body: Any) -> web.Response | None:
    """The first answer to a retried request, before anything is validated again: a retry
    after the original's expiry time or after a cancel must still get the first result."""
    idempotency = _idempotency(request, body)
    if idempotency is None:
        return None
    store, tree = request.app[STORE], request.app[TREE]
    stored = await store.replay(office.id, *idempotency)
    if stored is None:
        return None
    payload = alert_json(stored, tree)
    payload["dispatch"] = await _dispatch_summary(store, stored)
    log.info("alert.replayed", alert_id=stored.id)
    return web.json_response(
        payload,
        status=201,
        headers={"Location": f"/api/v1/alerts/{stored.id}", "Idempotent-Replayed": "true"},
        dumps=_dumps,
    )


async def _store_alert(
    request: web.Request, alert: Alert, office: Office, body: Any, cancels: str | None = None
) -> web.Response:
    store, tree = request.app[STORE], request.app[TREE]
    stored, created = await store.create_alert(
        alert, office_id=office.id, idempotency=_idempotency(request, body), cancels=cancels
    )
    log.info(
        "alert.accepted" if created else "alert.replayed",
        alert_id=stored.id,
        msg_type=stored.msg_type.value,
        status=stored.status.value,
        severity=stored.severity.value,
        areas=len(stored.areas),
    )
    payload = alert_json(stored, tree)
    payload["dispatch"] = {"state": "queued"} if created else await _dispatch_summary(store, stored)
    headers = {"Location": f"/api/v1/alerts/{stored.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return web.json_response(payload, status=201, headers=headers, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@routes.post("/api/v1/alerts")
async def issue_alert(request: web.Request) -> web.Response:
    office = office_of(request)
    tree, offices, store = request.app[TREE], request.app[OFFICES], request.app[STORE]
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be a JSON object describing the alert")
    if (replayed := await _replay(request, office, body)) is not None:
        return replayed
    try:
        alert_request = AlertRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid(exc) from exc
    if alert_request.msg_type is MsgType.CANCEL:
        raise ValidationFailed(
            "cancel an alert with POST /api/v1/alerts/{id}/cancel",
            details=[{"field": "msg_type", "message": "use the cancel endpoint"}],
        )
    if Channel.SMS in alert_request.channels and SMS not in request.app:
        raise ValidationFailed(
            "channel 'sms' is not configured on this engine (no [sms] gateways); "
            "use ['loudspeaker']",
            details=[{"field": "channels", "message": "sms not configured"}],
        )
    cover = _check_areas(tree, offices, office, alert_request.areas)
    for ref in alert_request.references:
        old = await store.get_alert(ref)
        if old is None:
            raise ValidationFailed(
                f"references names unknown alert {ref!r}",
                details=[{"field": "references", "message": f"unknown alert {ref}"}],
            )
        offices.require_within(office, old.areas)
        if old.msg_type is MsgType.CANCEL:
            raise Conflict(f"{ref} is a cancel; issue a new alert instead of updating it")
        replaced = await store.dispatch_state(ref)
        if replaced.get("cancelled_by"):
            raise Conflict(
                f"alert {ref} was cancelled by {replaced['cancelled_by']}; issue a new alert",
                details={"cancelled_by": replaced["cancelled_by"]},
            )
    alert = Alert.issue(alert_request, office_id=office.id, office_name=office.name, areas=cover)
    return await _store_alert(request, alert, office, body)


@routes.post("/api/v1/alerts/{alert_id}/cancel")
async def cancel_alert(request: web.Request) -> web.Response:
    office = office_of(request)
    offices = request.app[OFFICES]
    original = await _visible_alert(request, office)
    body = await read_json(request, optional=True)
    replay_body = {"cancel": original.id, **(body if isinstance(body, dict) else {})}
    if (replayed := await _replay(request, office, replay_body)) is not None:
        return replayed
    try:
        cancel = CancelRequest.model_validate(body or {})
    except ValidationError as exc:
        raise invalid(exc) from exc
    offices.require_within(office, original.areas)
    if original.msg_type is MsgType.CANCEL:
        raise Conflict(f"{original.id} is itself a cancel; it cannot be cancelled")
    now = utcnow()
    if original.expired(now):
        raise Conflict(
            f"alert {original.id} expired at {original.expires.isoformat()}; nothing to cancel"
        )
    request_model = AlertRequest.model_construct(
        event=original.event,
        event_code=original.event_code,
        severity=original.severity,
        headline=f"解除：{original.headline}"[:120],
        text=cancel.reason or f"{original.sender_name}解除{original.headline}",
        instruction=None,
        areas=original.areas,
        channels=original.channels,
        expires=original.expires,
        expires_in=None,
        status=original.status,
        msg_type=MsgType.CANCEL,
        references=[original.id],
        repeat=1,
    )
    alert = Alert.issue(
        request_model, office_id=office.id, office_name=office.name, areas=original.areas, sent=now
    )
    return await _store_alert(request, alert, office, replay_body, cancels=original.id)


async def _visible_alert(
    request: web.Request, office: Office, alert_id: str | None = None
) -> Alert:
    alert_id = alert_id or request.match_info["alert_id"]
    alert = await request.app[STORE].get_alert(alert_id) if len(alert_id) <= 80 else None
    if alert is None:
        raise NotFound(f"no alert {alert_id!r}")
    if not request.app[OFFICES].can_see(office, alert.areas):
        # Not a 404: the id is not secret, but this office has no business with it.
        raise Forbidden(
            f"alert {alert_id} does not concern region {office.region}", region_codes=alert.areas
        )
    return alert


def _regions_shown(tree: RegionTree, areas: Sequence[str], levels: Sequence[Level]) -> set[str]:
    """The province, the areas and what lies above them, and their regions at ``levels``:
    every region of those levels that can have a terminal the alert expects."""
    codes = {areas[0][:2]}
    for area in areas:
        if area not in tree:
            continue
        codes.update(region.code for region in tree.path(area))
        for level in levels:
            if level > tree.level(area):
                codes.update(region.code for region in tree.descendants(area, level=level))
    return codes


async def _dispatch_summary(store: Store, alert: Alert) -> dict[str, Any]:
    root_code = alert.areas[0][:2]
    report = await store.delivery(alert.id, [root_code])
    root = report.by_region.get(root_code, Delivery())
    return {"state": report.dispatch.get("state", "unknown"), **root.as_dict()}


def _parse_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise ValidationFailed(
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


@routes.get("/api/v1/alerts")
async def list_alerts(request: web.Request) -> web.Response:
    office = office_of(request)
    store, tree, offices = request.app[STORE], request.app[TREE], request.app[OFFICES]
    limit = _parse_int(request, "limit", 50, 1, 500)
    alerts = [
        a for a in await store.list_alerts(limit=limit * 4) if offices.can_see(office, a.areas)
    ]
    items = []
    for alert in alerts[:limit]:
        item = alert_json(alert, tree)
        item["dispatch"] = await _dispatch_summary(store, alert)
        items.append(item)
    return web.json_response({"alerts": items, "count": len(items)}, dumps=_dumps)


@routes.get("/api/v1/alerts/{alert_id}")
async def get_alert(request: web.Request) -> web.Response:
    office = office_of(request)
    store, tree = request.app[STORE], request.app[TREE]
    alert = await _visible_alert(request, office)
    levels = {"city": Level.CITY, "county": Level.COUNTY, "township": Level.TOWNSHIP}
    detail = query_choice(request, "detail", list(levels), "county")
    assert detail is not None  # noqa: S101  it has a default
    shown = [level for level in levels.values() if level <= levels[detail]]
    report = await store.delivery(alert.id, _regions_shown(tree, alert.areas, shown))
    # Every expected terminal lies in the province, so its counter is the alert's total.
    total = report.by_region.get(alert.areas[0][:2], Delivery())
    breakdown: dict[str, list[dict[str, Any]]] = {}
    for name, level in levels.items():
        if level > levels[detail]:
            continue
        rows = []
        for code, counts in sorted(report.by_region.items()):
            if code in tree and tree.level(code) is level and counts.expected:
                rows.append({"code": code, "name": tree.name(code), **counts.as_dict()})
        breakdown[f"by_{name}"] = rows
    dispatch = report.dispatch
    body = alert_json(alert, tree)
    body["delivery"] = {
        "state": _delivery_state(alert, dispatch),
        **total.as_dict(),
        "offline_at_dispatch": int(dispatch.get("offline_at_dispatch", 0)),
        "queued_at": dispatch.get("queued_at"),
        "dispatched_at": dispatch.get("dispatched_at"),
        "last_ack_at": _ms_iso(dispatch.get("last_ack_ms")),
        "resends": int(dispatch.get("resends", 0)),
        "escalated": int(dispatch.get("escalated", 0)),
        "cancelled_by": dispatch.get("cancelled_by"),
        "superseded_by": dispatch.get("superseded_by"),
        **breakdown,
    }
    if SMS in request.app:
        # Texts of the alert itself, and those its escalations sent to village contacts.
        sms = await request.app[SMS].summary(alert.id)
        if sms is not None or Channel.SMS in alert.channels:
            body["delivery"]["sms"] = sms
    return web.json_response(body, dumps=_dumps)


def _delivery_state(alert: Alert, dispatch: dict[str, str]) -> str:
    """queued, dispatching, partial or dispatched while the alert is live; then why it ended."""
    if dispatch.get("cancelled_by") and alert.msg_type is not MsgType.CANCEL:
        return "cancelled"
    if dispatch.get("superseded_by"):
        return "superseded"
    if alert.expired():
        return "expired"
    return dispatch.get("state", "unknown")


def _ms_iso(value: str | None) -> str | None:
    if not value:
        return None
    return datetime.fromtimestamp(int(value) / 1000, UTC).isoformat()


_TERMINAL_STATES = (
    "pending",
    "received",
    "playing",
    "played",
    "failed",
    "no_ack",
    "cancelled",
    "offline",
)


@routes.get("/api/v1/alerts/{alert_id}/terminals")
async def alert_terminals(request: web.Request) -> web.Response:
    """Each expected terminal of an alert: who got it, who did not, who was offline."""
    office = office_of(request)
    tree, store = request.app[TREE], request.app[STORE]
    alert = await _visible_alert(request, office)
    wanted = query_choice(request, "state", _TERMINAL_STATES)
    limit = _parse_int(request, "limit", 1000, 1, 20_000)
    offset = _parse_int(request, "offset", 0, 0, 10_000_000)
    rows = [
        row
        for row in await store.alert_terminals(alert.id)
        if tree.is_within(row["region"], office.region)
        and (
            wanted is None
            or row["state"] == wanted
            or (wanted == "failed" and row["state"] == "no_ack")
            or (wanted == "offline" and row["offline_at_dispatch"])
        )
    ]
    for row in rows[offset : offset + limit]:
        row["region_name"] = tree.name(row["region"]) if row["region"] in tree else None
    return web.json_response(
        {"alert_id": alert.id, "total": len(rows), "terminals": rows[offset : offset + limit]},
        dumps=_dumps,
    )


@routes.get("/api/v1/escalations")
async def list_escalations(request: web.Request) -> web.Response:
    """Terminals failed after their last resend, newest first, inside the office's region."""
    office = office_of(request)
    store, tree = request.app[STORE], request.app[TREE]
    limit = _parse_int(request, "limit", 100, 1, 1000)
    alert_id = request.query.get("alert_id")
    if alert_id is not None:
        await _visible_alert(request, office, alert_id)
    records = await store.escalations(alert_id=alert_id, limit=limit * 4 if not alert_id else limit)
    mine = [
        r for r in records if r.get("region") in tree and tree.is_within(r["region"], office.region)
    ]
    return web.json_response(
        {"escalations": mine[:limit], "count": len(mine[:limit])}, dumps=_dumps
    )


@routes.get("/api/v1/regions/{code}")
async def get_region(request: web.Request) -> web.Response:
    office_of(request)
    tree, store = request.app[TREE], request.app[STORE]
    code = request.match_info["code"]
    try:
        region = tree.get(code)
    except UnknownRegion as exc:
        raise NotFound(exc.message, details=exc.details) from exc
    children = tree.children(code)
    return web.json_response(
        {
            "code": region.code,
            "name": region.name,
            "level": region.level.name.lower(),
            "level_label": region.level.label_zh,
            "parent": region.parent,
            "path": [{"code": r.code, "name": r.name} for r in tree.path(code)],
            "topic": tree.topic(code),
            "children": [{"code": c.code, "name": c.name} for c in children],
            "terminals": await store.count_terminals(code),
        },
        dumps=_dumps,
    )


@routes.get("/api/v1/terminals")
async def list_terminals(request: web.Request) -> web.Response:
    office = office_of(request)
    tree, offices, store = request.app[TREE], request.app[OFFICES], request.app[STORE]
    code = request.query.get("region", office.region)
    tree.get(code)
    offices.require_within(office, [code])
    limit = _parse_int(request, "limit", 100, 1, 5000)
    offset = _parse_int(request, "offset", 0, 0, 10_000_000)
    total, items = await store.list_terminals(code, limit=limit, offset=offset)
    return web.json_response(
        {"region": code, "total": total, "offset": offset, "terminals": items}, dumps=_dumps
    )


def parse_terminals(
    items: Any,
    tree: RegionTree,
    *,
    row_label: str = "item",
    row_numbers: Sequence[int] | None = None,
) -> list[TerminalIn]:
    """Validate a whole list; every bad row is reported, and nothing is returned if one is bad."""
    if not isinstance(items, list):
        raise ValidationFailed('send a JSON list of terminals: [{"id", "region", "kind"}]')
    if not items:
        raise ValidationFailed("the terminal list is empty")
    if len(items) > MAX_TERMINALS_PER_REQUEST:
        raise ValidationFailed(
            f"at most {MAX_TERMINALS_PER_REQUEST} terminals per request; send them in parts"
        )
    errors: list[dict[str, Any]] = []
    out: list[TerminalIn] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        row = row_numbers[index] if row_numbers is not None else index
        try:
            terminal = TerminalIn.model_validate(item)
        except ValidationError as exc:
            errors.extend({row_label: row, **d} for d in validation_details(exc))
            continue
        try:
            tree.get(terminal.region)
        except RegionError as exc:
            errors.append(
                {row_label: row, "field": "region", "message": exc.message, "type": exc.code}
            )
            continue
        if terminal.id in seen:
            errors.append(
                {
                    row_label: row,
                    "field": "id",
                    "message": f"terminal {terminal.id!r} also at {row_label} {seen[terminal.id]}",
                    "type": "duplicate",
                }
            )
            continue
        seen[terminal.id] = row
        out.append(terminal)
    refuse_rows(errors, row_label)
    return out


@routes.post("/api/v1/terminals")
async def register_terminals(request: web.Request) -> web.Response:
    office = office_of(request)
    tree, offices, store = request.app[TREE], request.app[OFFICES], request.app[STORE]
    body = await read_json(request)
    if isinstance(body, dict) and "terminals" in body:
        body = body["terminals"]
    terminals = parse_terminals(body, tree)
    offices.require_within(office, sorted({t.region for t in terminals}))
    result = await store.register_terminals(terminals)
    return web.json_response(
        {"created": result.created, "updated": result.updated, "unchanged": result.unchanged},
        status=200,
    )


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})

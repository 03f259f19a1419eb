"""``/api/v1/alerts``: issue, cancel, list and follow alerts, and each expected terminal's state.

Handlers stay free of error plumbing: the middleware turns ``EbdError`` into the JSON error
body with its status."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from dispatcher.core.alert_status import alert_status
from dispatcher.core.approval import (
    ApprovalPolicy,
    PreviewRequired,
    PreviewStale,
    Submission,
    SubmissionState,
)
from dispatcher.core.audit import AuditAction
from dispatcher.core.auth import Office, Offices
from dispatcher.core.clock import shown, shown_ms
from dispatcher.core.errors import Conflict, StoreUnavailable, ValidationFailed
from dispatcher.core.models import (
    Alert,
    AlertRequest,
    CancelRequest,
    Channel,
    MsgType,
    new_alert_id,
    utcnow,
)
from dispatcher.core.people import Role
from dispatcher.core.preview import preview_digest, require_reachable
from dispatcher.core.regions import Level, Region, RegionTree, villages_without_terminal
from dispatcher.core.validation import invalid
from dispatcher.http.audio import check_recording, preview_audio
from dispatcher.http.audit import audit
from dispatcher.http.previews import build_preview
from dispatcher.http.principal import PERSON, require_role
from dispatcher.http.requests import (
    accept_query,
    dumps,
    office_of,
    parse_int,
    query_choice,
    read_json,
    visible_alert,
)
from dispatcher.http.state import OFFICES, SMS, STORE, TREE, VILLAGE_GAPS
from dispatcher.store.delivery import DeliveryCounts
from dispatcher.store.store import Store

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")
# ``?dry_run=1`` or ``?dry_run=true`` previews; the other spellings say "no" explicitly.
_DRY_RUN = ("1", "true", "0", "false")

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()
# Which warnings wait for an approver (``dispatcher.app`` builds it from the settings).
APPROVAL = web.AppKey("approval", ApprovalPolicy)


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
        submission = await store.approvals.remembered(office.id, *idempotency)
        if submission is None:
            return None
        log.info("alert.submit_replayed", submission_id=submission.id)
        return web.json_response(
            submission_json(submission, tree),
            status=202,
            headers={
                "Location": f"/api/v1/approvals/{submission.id}",
                "Idempotent-Replayed": "true",
            },
            dumps=dumps,
        )
    payload = alert_json(stored, tree)
    payload["dispatch"] = await _dispatch_summary(store, stored)
    log.info("alert.replayed", alert_id=stored.id)
    return web.json_response(
        payload,
        status=201,
        headers={"Location": f"/api/v1/alerts/{stored.id}", "Idempotent-Replayed": "true"},
        dumps=dumps,
    )


async def store_alert(
    request: web.Request,
    alert: Alert,
    office: Office,
    body: Any,
    cancels: str | None = None,
    approval: dict[str, str] | None = None,
) -> web.Response:
    """Stores and queues ``alert`` of ``office``; 201. ``body`` None: no Idempotency-Key
    applies (an approval). ``approval``: the submission's times and people, kept in the
    alert's dispatch record so its detail shows them."""
    store, tree = request.app[STORE], request.app[TREE]
    idempotency = None if body is None else _idempotency(request, body)
    try:
        stored, created = await store.create_alert(
            alert, office_id=office.id, idempotency=idempotency, cancels=cancels
        )
    except StoreUnavailable as exc:
        if isinstance(exc.details, dict) and exc.details.get("alert_id") == alert.id:
            # Stored and queued, only not yet on enough replicas (503): it goes out, so it
            # is on record now; the retry that confirms it is a replay, never audited.
            await audit(request, _audit_action(alert, cancels), alert.id, _audit_detail(alert))
        raise
    if created and approval is not None:
        await store.set_dispatch(alert.id, **approval)
    log.info(
        "alert.accepted" if created else "alert.replayed",
        alert_id=stored.id,
        msg_type=stored.msg_type.value,
        status=stored.status.value,
        severity=stored.severity.value,
        areas=len(stored.areas),
    )
    if created:
        # A replay changed nothing, so it is not recorded again.
        await audit(request, _audit_action(stored, cancels), stored.id, _audit_detail(stored))
    payload = alert_json(stored, tree)
    payload["dispatch"] = {"state": "queued"} if created else await _dispatch_summary(store, stored)
    headers = {"Location": f"/api/v1/alerts/{stored.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return web.json_response(payload, status=201, headers=headers, dumps=dumps)


def _audit_action(alert: Alert, cancels: str | None) -> AuditAction:
    if cancels is not None or alert.msg_type is MsgType.CANCEL:
        return AuditAction.ALERT_CANCEL
    if alert.references or alert.msg_type is MsgType.UPDATE:
        return AuditAction.ALERT_UPDATE
    return AuditAction.ALERT_ISSUE


def _audit_detail(alert: Alert) -> dict[str, Any]:
    """What the log keeps of an alert: enough to tell which warning it was, not its text."""
    return {
        "event": alert.event,
        "severity": alert.severity.value,
        "status": alert.status.value,
        "msg_type": alert.msg_type.value,
        "headline": alert.headline,
        "areas": alert.areas,
        "channels": [c.value for c in alert.channels],
        "expires": alert.expires.isoformat(),
        "references": alert.references,
    }


async def checked_request(
    request: web.Request, office: Office, fields: dict[str, Any]
) -> tuple[AlertRequest, list[str]]:
    """``fields`` as an alert ``office`` may send now (422, 403, 409 otherwise), and the
    minimal cover of its areas: what a direct issue, a dry run and an approval all check."""
    tree, offices, store = request.app[TREE], request.app[OFFICES], request.app[STORE]
    try:
        alert_request = AlertRequest.model_validate(fields)
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
        offices.require_may_replace(office, old.sender, old.id, "update")
        if old.msg_type is MsgType.CANCEL:
            raise Conflict(f"{ref} is a cancel; issue a new alert instead of updating it")
        replaced = await store.dispatch_state(ref)
        if replaced.get("cancelled_by"):
            raise Conflict(
                f"alert {ref} was cancelled by {replaced['cancelled_by']}; issue a new alert",
                details={"cancelled_by": replaced["cancelled_by"]},
            )
    return alert_request, cover


def check_preview(office: Office, cover: list[str], alert_request: AlertRequest) -> None:
    """428 when no preview was seen, 409 when what is sent now is not what it showed."""
    if alert_request.preview_id is None:
        raise PreviewRequired(
            "preview the warning first: POST /api/v1/alerts?dry_run=1 with the same body, "
            "then send it with the preview_id of that answer",
            details=[{"field": "preview_id", "message": "required"}],
        )
    if alert_request.preview_id != preview_digest(office.id, cover, alert_request):
        raise PreviewStale(
            "the areas or texts changed since the preview; preview again "
            "(POST /api/v1/alerts?dry_run=1) and send the new preview_id",
            details=[{"field": "preview_id", "message": "stale"}],
        )


@routes.post("/api/v1/alerts")
async def issue_alert(request: web.Request) -> web.Response:
    office = require_role(request, Role.COMPOSER)
    # dry_run is the only flag: one the engine does not know must not issue a real warning.
    accept_query(request, "dry_run")
    dry_run = query_choice(request, "dry_run", _DRY_RUN, "0") in ("1", "true")
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be a JSON object describing the alert")
    return await issue_fields(request, office, body, dry_run=dry_run)


async def issue_fields(
    request: web.Request, office: Office, body: dict[str, Any], *, dry_run: bool = False
) -> web.Response:
    """What ``POST /api/v1/alerts`` does with its body once read: replay, check, preview,
    submit for approval or issue, as ``office`` (and the request's person). CAP import
    (``dispatcher.http.cap``) issues through here too."""
    person = request.get(PERSON)
    if not dry_run and (replayed := await _replay(request, office, body)) is not None:
        return replayed
    alert_request, cover = await checked_request(request, office, body)
    check_recording(request.app, alert_request)
    if dry_run:
        # Nothing is stored, sent or audited: the answer is all there is.
        preview = await build_preview(request.app, office, alert_request, cover)
        require_reachable(preview)
        # What the loudspeakers will play, rendered now so the send that follows finds it.
        preview["audio"] = await preview_audio(request.app, alert_request)
        return web.json_response(preview, dumps=dumps)
    if person is not None or alert_request.preview_id is not None:
        check_preview(office, cover, alert_request)
    policy = request.app[APPROVAL]
    if policy.needed(office.id, alert_request, by_person=person is not None):
        return await _submit(request, office, alert_request, body, cover)
    alert = Alert.issue(alert_request, office_id=office.id, office_name=office.name, areas=cover)
    return await store_alert(request, alert, office, body)


async def _submit(
    request: web.Request,
    office: Office,
    alert_request: AlertRequest,
    fields: dict[str, Any],
    cover: list[str],
) -> web.Response:
    """Keeps the warning for an approver (202); nothing is sent."""
    preview = await build_preview(request.app, office, alert_request, cover)
    require_reachable(preview)
    submission = new_submission(
        request, office, alert_request, fields, cover, preview, SubmissionState.PENDING
    )
    await request.app[STORE].approvals.add(submission)
    if (idempotency := _idempotency(request, fields)) is not None:
        await request.app[STORE].approvals.remember(office.id, *idempotency, submission.id)
    log.info(
        "alert.submitted",
        submission_id=submission.id,
        severity=alert_request.severity.value,
        areas=len(cover),
    )
    await audit(
        request,
        AuditAction.ALERT_SUBMIT,
        submission.id,
        {**request_detail(alert_request), "expires_at": submission.expires_at.isoformat()},
    )
    return web.json_response(
        submission_json(submission, request.app[TREE]),
        status=202,
        headers={"Location": f"/api/v1/approvals/{submission.id}"},
        dumps=dumps,
    )


def new_submission(
    request: web.Request,
    office: Office,
    alert_request: AlertRequest,
    fields: dict[str, Any],
    cover: list[str],
    preview: dict[str, Any],
    state: SubmissionState,
) -> Submission:
    """A submission (or a draft) of ``fields`` by the request's person (or machine), now."""
    person = request.get(PERSON)
    now = utcnow()
    return Submission(
        id=new_alert_id(office.id, now),
        state=state,
        office_id=office.id,
        office_name=office.name,
        office_region=office.region,
        composer=person.id if person is not None else None,
        composer_name=person.name if person is not None else None,
        body={k: v for k, v in fields.items() if k not in ("preview_id", "draft")},
        cover=cover,
        severity=alert_request.severity,
        headline=alert_request.headline,
        preview_id=str(preview["preview_id"]),
        preview=preview,
        submitted_at=now,
        expires_at=request.app[APPROVAL].expiry(now),
    )


def submission_json(
    submission: Submission, tree: RegionTree, *, full: bool = False
) -> dict[str, Any]:
    """A submission as the API shows it (its preview and body with ``full``)."""
    current = submission.current()
    body = current.model_dump(mode="json", exclude=None if full else {"preview", "body"})
    body["severity_label"] = current.severity.label_zh
    body["area_names"] = {code: tree.name(code) for code in current.cover if code in tree}
    links = {"self": f"/api/v1/approvals/{current.id}"}
    if current.state is SubmissionState.DRAFT:
        links["submit"] = f"/api/v1/approvals/{current.id}/submit"
    if current.state is SubmissionState.PENDING:
        links |= {
            "approve": f"/api/v1/approvals/{current.id}/approve",
            "reject": f"/api/v1/approvals/{current.id}/reject",
        }
    if current.state is SubmissionState.SENT:
        links["alert"] = f"/api/v1/alerts/{current.id}"
    body["links"] = links
    return body


def request_detail(alert_request: AlertRequest) -> dict[str, Any]:
    """What the log keeps of a submitted warning: which it was, not its text."""
    return {
        "event": alert_request.event,
        "severity": alert_request.severity.value,
        "status": alert_request.status.value,
        "msg_type": alert_request.msg_type.value,
        "headline": alert_request.headline,
        "areas": alert_request.areas,
        "channels": [c.value for c in alert_request.channels],
        "references": alert_request.references,
    }


@routes.post("/api/v1/alerts/{alert_id}/cancel")
async def cancel_alert(request: web.Request) -> web.Response:
    # Never waits for an approver: a cancel must go out at once.
    office = require_role(request, Role.COMPOSER)
    accept_query(request)
    original = await visible_alert(request, office)
    body = await read_json(request, optional=True)
    return await cancel_as(request, office, original, body)


async def cancel_as(
    request: web.Request, office: Office, original: Alert, body: Any
) -> web.Response:
    """What ``POST /api/v1/alerts/{id}/cancel`` does once it found the alert and read its
    body (``CancelRequest`` fields, or None); a CAP Cancel (``dispatcher.http.cap``) too."""
    offices = request.app[OFFICES]
    replay_body = {"cancel": original.id, **(body if isinstance(body, dict) else {})}
    if (replayed := await _replay(request, office, replay_body)) is not None:
        return replayed
    try:
        cancel = CancelRequest.model_validate(body or {})
    except ValidationError as exc:
        raise invalid(exc) from exc
    offices.require_within(office, original.areas)
    offices.require_may_replace(office, original.sender, original.id, "cancel")
    if original.msg_type is MsgType.CANCEL:
        raise Conflict(f"{original.id} is itself a cancel; it cannot be cancelled")
    now = utcnow()
    if original.expired(now):
        raise Conflict(
            f"alert {original.id} expired at {shown(original.expires)}; nothing to cancel"
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
    return await store_alert(request, alert, office, replay_body, cancels=original.id)


def regions_shown(tree: RegionTree, areas: Sequence[str], levels: Sequence[Level]) -> set[str]:
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


async def _village_gaps(
    request: web.Request, alert: Alert, dispatch: dict[str, Any]
) -> list[Region] | None:
    """The villages of the alert's areas that none of its expected terminals is in; None
    before its dispatch recorded them."""
    dispatched_at = dispatch.get("dispatched_at")
    if not dispatched_at:
        return None
    store, tree = request.app[STORE], request.app[TREE]
    known = request.app.get(VILLAGE_GAPS)
    codes = known.get(alert.id, dispatched_at) if known is not None else None
    if codes is None:
        expected, _ = await store.expected_of(alert.id)
        areas = [area for area in alert.areas if area in tree]
        found = villages_without_terminal(tree, areas, set(expected.values()))
        codes = tuple(village.code for village in found)
        if known is not None:
            known.put(alert.id, dispatched_at, codes)
    return [tree.get(code) for code in codes]


async def _dispatch_summary(store: Store, alert: Alert) -> dict[str, Any]:
    root_code = alert.areas[0][:2]
    report = await store.delivery(alert.id, [root_code])
    root = report.by_region.get(root_code, DeliveryCounts())
    return {"state": alert_status(alert, report.dispatch), **root.as_dict()}


@routes.get("/api/v1/alerts")
async def list_alerts(request: web.Request) -> web.Response:
    office = office_of(request)
    accept_query(request, "limit")
    store, tree, offices = request.app[STORE], request.app[TREE], request.app[OFFICES]
    limit = parse_int(request, "limit", 50, 1, 500)
    alerts = [
        a for a in await store.list_alerts(limit=limit * 4) if offices.can_see(office, a.areas)
    ]
    items = []
    for alert in alerts[:limit]:
        item = alert_json(alert, tree)
        item["dispatch"] = await _dispatch_summary(store, alert)
        items.append(item)
    return web.json_response({"alerts": items, "count": len(items)}, dumps=dumps)


@routes.get("/api/v1/alerts/{alert_id}")
async def get_alert(request: web.Request) -> web.Response:
    office = office_of(request)
    store, tree = request.app[STORE], request.app[TREE]
    accept_query(request, "detail", "villages")
    # The villages with no terminal are counted always, listed on request: a province alert's
    # list runs to thousands of villages, which a progress poll has no use for.
    list_villages = query_choice(request, "villages", ["count", "list"], "count") == "list"
    alert = await visible_alert(request, office)
    levels = {"city": Level.CITY, "county": Level.COUNTY, "township": Level.TOWNSHIP}
    detail = query_choice(request, "detail", list(levels), "county")
    assert detail is not None  # noqa: S101  it has a default
    shown = [level for level in levels.values() if level <= levels[detail]]
    report = await store.delivery(alert.id, regions_shown(tree, alert.areas, shown))
    gaps = await _village_gaps(request, alert, report.dispatch)
    # Every expected terminal lies in the province, so its counter is the alert's total.
    total = report.by_region.get(alert.areas[0][:2], DeliveryCounts())
    breakdown: dict[str, list[dict[str, Any]]] = {}
    for name, level in levels.items():
        if level > levels[detail]:
            continue
        rows = []
        for code, counts in sorted(report.by_region.items()):
            if code in tree and tree.level(code) is level and counts.expected:
                rows.append({"code": code, "name": tree.name(code), **counts.as_dict()})
                if gaps is not None:
                    rows[-1]["villages_without_terminal"] = sum(
                        v.code.startswith(code) for v in gaps
                    )
        breakdown[f"by_{name}"] = rows
    dispatch = report.dispatch
    body = alert_json(alert, tree)
    body["approval"] = _approval_of(dispatch)
    body["delivery"] = {
        "state": alert_status(alert, dispatch),
        **total.as_dict(),
        "offline_at_dispatch": int(dispatch.get("offline_at_dispatch", 0)),
        "queued_at": dispatch.get("queued_at"),
        "dispatched_at": dispatch.get("dispatched_at"),
        "last_ack_at": shown_ms(dispatch.get("last_ack_ms")),
        "cancelled_at": dispatch.get("cancelled_at"),
        "resends": int(dispatch.get("resends", 0)),
        "escalated": int(dispatch.get("escalated", 0)),
        "cancelled_by": dispatch.get("cancelled_by"),
        "superseded_by": dispatch.get("superseded_by"),
        **breakdown,
        # Villages in the areas where no expected terminal is: no loudspeaker sounded there,
        # whatever the coverage says. None until the alert is dispatched.
        "villages_without_terminal": None if gaps is None else len(gaps),
        "villages_without_terminal_list": None
        if gaps is None or not list_villages
        else [{"code": v.code, "name": v.name, "path": tree.full_name(v.code)} for v in gaps],
    }
    if SMS in request.app:
        # Texts of the alert itself, and those its escalations sent to village contacts.
        sms = await request.app[SMS].summary(alert.id)
        if sms is not None or Channel.SMS in alert.channels:
            body["delivery"]["sms"] = sms
    return web.json_response(body, dumps=dumps)


def _approval_of(dispatch: dict[str, str]) -> dict[str, Any] | None:
    """Who approved the alert and when, None if it needed no approval. The wait for the
    approver counts in its latency: ``submitted_at`` is when the composer sent it."""
    if not dispatch.get("approved_at"):
        return None
    return {
        name: dispatch.get(name)
        for name in (
            "submitted_at",
            "approved_at",
            "approver",
            "approver_name",
            "approver_office",
            "composer",
            "composer_name",
        )
    }


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
    accept_query(request, "state", "limit", "offset")
    alert = await visible_alert(request, office)
    wanted = query_choice(request, "state", _TERMINAL_STATES)
    limit = parse_int(request, "limit", 1000, 1, 20_000)
    offset = parse_int(request, "offset", 0, 0, 10_000_000)
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
        dumps=dumps,
    )

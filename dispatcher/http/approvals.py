"""``/api/v1/approvals``: warnings waiting for a second person, and their decisions.

A composer's actual red or orange warning (``dispatcher.core.approval``) is kept here instead of
being sent. An approver of the composer's office or of an office above it, never the composer,
sees what the composer's preview showed and approves (the warning is then issued as a direct
POST would, with ``sent`` = now) or rejects it with a reason. Office tokens (machines) may read
submissions but never decide them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from dispatcher.core.approval import PreviewStale, RejectRequest, Submission, SubmissionState
from dispatcher.core.audit import AuditAction
from dispatcher.core.auth import Office
from dispatcher.core.clock import shown
from dispatcher.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from dispatcher.core.models import Alert, AlertRequest, utcnow
from dispatcher.core.people import Person, Role
from dispatcher.core.preview import preview_digest, require_reachable
from dispatcher.core.validation import invalid
from dispatcher.http.alerts import (
    APPROVAL,
    check_preview,
    checked_request,
    new_submission,
    request_detail,
    store_alert,
    submission_json,
)
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
)
from dispatcher.http.state import OFFICES, STORE, TREE

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

_STATES = [state.value for state in SubmissionState]


def _sees(request: web.Request, office: Office, submission: Submission) -> bool:
    """An office sees the submissions of its own office and of the offices below it."""
    return request.app[TREE].is_within(submission.office_region, office.region)


async def _visible(request: web.Request, office: Office) -> Submission:
    submission_id = request.match_info["submission_id"]
    submission = await request.app[STORE].approvals.get(submission_id)
    if submission is None:
        raise NotFound(f"no submission {submission_id!r}; see GET /api/v1/approvals")
    if not _sees(request, office, submission):
        raise Forbidden(
            f"submission {submission_id} is of office {submission.office_id} "
            f"(region {submission.office_region}), which is not office {office.id} or below it",
            region_codes=[submission.office_region],
        )
    return submission


@routes.get("/api/v1/approvals")
async def list_approvals(request: web.Request) -> web.Response:
    office = office_of(request)
    accept_query(request, "state", "limit")
    wanted = query_choice(request, "state", _STATES)
    limit = parse_int(request, "limit", 50, 1, 500)
    tree = request.app[TREE]
    # Submissions are few beside alerts; the newest are read and filtered here.
    found = [
        submission.current()
        for submission in await request.app[STORE].approvals.recent(limit=2000)
        if _sees(request, office, submission)
    ]
    shown_ = [s for s in found if wanted is None or s.state.value == wanted][:limit]
    items = [submission_json(s, tree) for s in shown_]
    return web.json_response({"approvals": items, "count": len(items)}, dumps=dumps)


@routes.get("/api/v1/approvals/{submission_id}")
async def get_approval(request: web.Request) -> web.Response:
    office = office_of(request)
    accept_query(request)
    submission = await _visible(request, office)
    return web.json_response(submission_json(submission, request.app[TREE], full=True), dumps=dumps)


async def _decider(request: web.Request, verb: str) -> tuple[Office, Person, Submission]:
    """The approver deciding, once allowed to ``verb`` the pending submission the path names."""
    office = office_of(request)
    person = request.get(PERSON)
    if person is None:
        raise Forbidden(
            f"an office token cannot {verb} a warning: an approver signs in (or uses their "
            "own API token) to decide it"
        )
    require_role(request, Role.APPROVER)
    submission = await _visible(request, office)
    if submission.composer == person.id:
        raise Forbidden(
            f"{person.id} composed submission {submission.id} and cannot {verb} it; "
            "another approver of this office or one above it must"
        )
    current = submission.current()
    if current.state is SubmissionState.EXPIRED:
        if submission.state is SubmissionState.PENDING:
            await request.app[STORE].approvals.transition(
                submission.id,
                SubmissionState.PENDING,
                lambda s: s.model_copy(update={"state": SubmissionState.EXPIRED}),
            )
        raise Conflict(
            f"submission {submission.id} expired at {shown(submission.expires_at)} unapproved; "
            "the composer must preview and submit it again",
            details={"state": SubmissionState.EXPIRED.value},
        )
    if current.state is not SubmissionState.PENDING:
        raise Conflict(
            f"submission {submission.id} is {current.state.value}, not pending; nothing to {verb}",
            details={"state": current.state.value},
        )
    return office, person, submission


def _decided(
    state: SubmissionState, person: Person, office: Office, at: datetime, reason: str | None = None
) -> dict[str, Any]:
    return {
        "state": state,
        "decided_at": at,
        "decided_by": person.id,
        "decided_by_name": person.name,
        "decided_by_office": office.id,
        "reason": reason,
    }


@routes.post("/api/v1/approvals/{submission_id}/approve")
async def approve(request: web.Request) -> web.Response:
    office, person, submission = await _decider(request, "approve")
    accept_query(request)
    if await read_json(request, optional=True) not in (None, {}):
        # What is approved is the submission as stored, nothing the approver sends.
        raise ValidationFailed(
            "approve takes no body (or {}); to change the warning, reject it with a reason "
            "and let the composer submit it again",
            details=[{"field": "body", "message": "no fields"}],
        )
    composer_office = request.app[OFFICES].get(submission.office_id)
    if composer_office is None:
        raise Conflict(
            f"office {submission.office_id} that submitted it is no longer configured; "
            "nothing can be issued in its name"
        )
    # Checked again as if sent now: the areas, the jurisdiction, an update's alert may have
    # changed meanwhile, and the approver must approve exactly what the preview showed.
    alert_request, cover = await checked_request(request, composer_office, dict(submission.body))
    if preview_digest(composer_office.id, cover, alert_request) != submission.preview_id:
        raise PreviewStale(
            "the warning no longer matches the preview it was submitted with; "
            "the composer must preview and submit it again"
        )
    require_reachable(await build_preview(request.app, composer_office, alert_request, cover))
    now = utcnow()
    decided = _decided(SubmissionState.APPROVED, person, office, now)
    answer = await _send(
        request, submission, SubmissionState.PENDING, decided, composer_office, alert_request, cover
    )
    log.info(
        "alert.approved",
        submission_id=submission.id,
        approver=person.id,
        waited_s=round((now - submission.submitted_at).total_seconds(), 3),
    )
    await audit(
        request,
        AuditAction.ALERT_APPROVE,
        submission.id,
        {
            "composer": submission.composer,
            "composer_office": submission.office_id,
            "submitted_at": submission.submitted_at.isoformat(),
        },
    )
    return answer


_UNDECIDED = {
    "decided_at": None,
    "decided_by": None,
    "decided_by_name": None,
    "decided_by_office": None,
}


async def _send(
    request: web.Request,
    submission: Submission,
    was: SubmissionState,
    decided: dict[str, Any],
    composer_office: Office,
    alert_request: AlertRequest,
    cover: list[str],
) -> web.Response:
    """Takes the submission from ``was`` to approved (so no one else sends it meanwhile),
    issues it as the composer's office would have, with its id and ``sent`` = now, and marks
    it sent; back to ``was`` if issuing failed."""
    store = request.app[STORE]
    taken = await store.approvals.transition(
        submission.id, was, lambda s: s.model_copy(update=decided)
    )
    alert = Alert.issue(
        alert_request,
        office_id=composer_office.id,
        office_name=composer_office.name,
        areas=cover,
        sent=taken.decided_at,
    ).model_copy(update={"id": submission.id})
    approval = None
    if was is SubmissionState.PENDING:
        approval = {
            "submitted_at": submission.submitted_at.isoformat(),
            "approved_at": alert.sent.isoformat(),
            "approver": taken.decided_by or "",
            "approver_name": taken.decided_by_name or "",
            "approver_office": taken.decided_by_office or "",
            "composer": submission.composer or "",
            "composer_name": submission.composer_name or "",
        }
    try:
        answer = await store_alert(request, alert, composer_office, None, approval=approval)
    except BaseException:
        # Not issued: back as it was, so it can be approved (or submitted) again.
        await store.approvals.transition(
            submission.id,
            SubmissionState.APPROVED,
            lambda s: s.model_copy(update={"state": was, **_UNDECIDED}),
        )
        raise
    await store.approvals.transition(
        submission.id,
        SubmissionState.APPROVED,
        lambda s: s.model_copy(update={"state": SubmissionState.SENT, "sent_at": alert.sent}),
    )
    return answer


@routes.post("/api/v1/approvals/{submission_id}/reject")
async def reject(request: web.Request) -> web.Response:
    office, person, submission = await _decider(request, "reject")
    accept_query(request)
    body = await read_json(request)
    try:
        decision = RejectRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid(exc) from exc
    rejected = await request.app[STORE].approvals.transition(
        submission.id,
        SubmissionState.PENDING,
        lambda s: s.model_copy(
            update=_decided(SubmissionState.REJECTED, person, office, utcnow(), decision.reason)
        ),
    )
    log.info("alert.rejected", submission_id=submission.id, approver=person.id)
    await audit(
        request,
        AuditAction.ALERT_REJECT,
        submission.id,
        {"composer": submission.composer, "reason": decision.reason},
    )
    return web.json_response(submission_json(rejected, request.app[TREE]), dumps=dumps)


@routes.post("/api/v1/approvals")
async def save_draft(request: web.Request) -> web.Response:
    """Keeps a draft its composer submits later (``…/submit``); nothing is checked against a
    preview or sent yet, but the fields must already make a valid warning."""
    office = require_role(request, Role.COMPOSER)
    accept_query(request)
    body = await read_json(request)
    if not isinstance(body, dict) or body.get("draft") is not True:
        raise ValidationFailed(
            'POST /api/v1/approvals keeps a draft: send {"draft": true, …the alert\'s fields}; '
            "to submit a warning, POST /api/v1/alerts",
            details=[{"field": "draft", "message": "must be true"}],
        )
    fields = {name: value for name, value in body.items() if name not in ("draft", "preview_id")}
    alert_request, cover = await checked_request(request, office, fields)
    preview = await build_preview(request.app, office, alert_request, cover)
    draft = new_submission(
        request, office, alert_request, fields, cover, preview, SubmissionState.DRAFT
    )
    await request.app[STORE].approvals.add(draft)
    log.info("alert.drafted", submission_id=draft.id)
    await audit(request, AuditAction.ALERT_DRAFT, draft.id, request_detail(alert_request))
    return web.json_response(
        submission_json(draft, request.app[TREE], full=True),
        status=201,
        headers={"Location": f"/api/v1/approvals/{draft.id}"},
        dumps=dumps,
    )


@routes.post("/api/v1/approvals/{submission_id}/submit")
async def submit_draft(request: web.Request) -> web.Response:
    """Submits a draft as ``POST /api/v1/alerts`` would its body: 202 pending when it needs an
    approver, else issued (201). Only whoever saved it may, with the draft's preview_id."""
    office = require_role(request, Role.COMPOSER)
    person = request.get(PERSON)
    accept_query(request)
    draft = await _visible(request, office)
    author = person.id if person is not None else None
    if draft.office_id != office.id or draft.composer != author:
        raise Forbidden(
            f"draft {draft.id} was saved by {draft.composer or 'the token of ' + draft.office_id}; "
            "only they may submit it"
        )
    if draft.state is not SubmissionState.DRAFT:
        raise Conflict(
            f"{draft.id} is {draft.state.value}, not a draft; nothing to submit",
            details={"state": draft.state.value},
        )
    body = await read_json(request, optional=True)
    if body is None:
        body = {}
    if not isinstance(body, dict) or set(body) - {"preview_id"}:
        raise ValidationFailed(
            'submit takes {"preview_id": …} (the preview of the draft), nothing else',
            details=[{"field": "body", "message": "only preview_id"}],
        )
    alert_request, cover = await checked_request(request, office, {**draft.body, **body})
    if person is not None or alert_request.preview_id is not None:
        check_preview(office, cover, alert_request)
    preview = await build_preview(request.app, office, alert_request, cover)
    require_reachable(preview)
    policy = request.app[APPROVAL]
    now = utcnow()
    if not policy.needed(office.id, alert_request, by_person=person is not None):
        decided = {"state": SubmissionState.APPROVED, **_UNDECIDED, "decided_at": now}
        return await _send(
            request, draft, SubmissionState.DRAFT, decided, office, alert_request, cover
        )
    pending = await request.app[STORE].approvals.transition(
        draft.id,
        SubmissionState.DRAFT,
        lambda s: s.model_copy(
            update={
                "state": SubmissionState.PENDING,
                "preview": preview,
                "preview_id": str(preview["preview_id"]),
                "submitted_at": now,
                "expires_at": policy.expiry(now),
            }
        ),
    )
    log.info("alert.submitted", submission_id=pending.id, severity=pending.severity.value)
    await audit(
        request,
        AuditAction.ALERT_SUBMIT,
        pending.id,
        {**request_detail(alert_request), "expires_at": pending.expires_at.isoformat()},
    )
    return web.json_response(
        submission_json(pending, request.app[TREE]),
        status=202,
        headers={"Location": f"/api/v1/approvals/{pending.id}"},
        dumps=dumps,
    )

"""``/api/v1/templates``: the warning templates as the office sees them, its edits, and the
alert a template gives.

A template edit is the office's own: another office never sees it. Composers and the office's
administrator edit; everyone of the office reads."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from dispatcher.core.audit import AuditAction
from dispatcher.core.errors import NotFound, ValidationFailed
from dispatcher.core.models import MAX_AREAS, AlertRequest, Severity
from dispatcher.core.people import Role
from dispatcher.core.validation import invalid
from dispatcher.core.warning_templates import (
    BUILT_IN,
    HAZARD_IDS,
    LANGS,
    Lang,
    TemplateEdit,
    WarningTemplate,
    apply_edit,
    render,
)
from dispatcher.http.audit import audit
from dispatcher.http.principal import require_role
from dispatcher.http.requests import accept_query, dumps, office_of, query_choice, read_json
from dispatcher.http.state import OFFICES, SMS, STORE, TREE
from dispatcher.store.templates import TemplateStore

routes = web.RouteTableDef()


def _templates(request: web.Request) -> TemplateStore:
    return TemplateStore(request.app[STORE].redis)


def _built_in(request: web.Request) -> WarningTemplate:
    template_id = request.match_info["template_id"]
    template = BUILT_IN.get(template_id)
    if template is None:
        shown = template_id if len(template_id) <= 64 else template_id[:64] + "…"
        raise NotFound(
            f"no template {shown!r}; GET /api/v1/templates lists them (e.g. typhoon-red)"
        )
    return template


@routes.get("/api/v1/templates")
async def list_templates(request: web.Request) -> web.Response:
    office = office_of(request)
    accept_query(request, "hazard", "severity")
    hazard = query_choice(request, "hazard", HAZARD_IDS)
    severity = query_choice(request, "severity", [s.value for s in Severity])
    edits = await _templates(request).edits(office.id)
    items = [
        apply_edit(template, edits.get(template.id)).as_json()
        for template in BUILT_IN.values()
        if (hazard is None or template.hazard == hazard)
        and (severity is None or template.severity.value == severity)
    ]
    return web.json_response({"templates": items, "count": len(items)}, dumps=dumps)


@routes.get("/api/v1/templates/{template_id}")
async def get_template(request: web.Request) -> web.Response:
    """The template; with ``areas`` (comma-separated codes), the alert body it gives them."""
    office = office_of(request)
    accept_query(request, "areas", "lang")
    built_in = _built_in(request)
    lang: Lang = "en" if query_choice(request, "lang", LANGS, "zh") == "en" else "zh"
    template = apply_edit(built_in, await _templates(request).edit(office.id, built_in.id))
    raw_areas = request.query.get("areas")
    if raw_areas is None:
        return web.json_response(template.as_json(), dumps=dumps)
    areas = [code.strip() for code in raw_areas.split(",") if code.strip()]
    if not areas or len(areas) > MAX_AREAS:
        raise ValidationFailed(
            f"areas must list 1 to {MAX_AREAS} region codes, comma-separated (e.g. 350102)",
            details=[{"field": "areas", "message": f"got {len(areas)} codes"}],
        )
    tree, offices = request.app[TREE], request.app[OFFICES]
    for code in areas:
        tree.get(code)
    offices.require_within(office, areas)
    cover = tree.cover(areas)
    body = render(
        template,
        lang=lang,
        areas=cover,
        area_names=[tree.name(code) for code in cover],
        sms=SMS in request.app,
    )
    try:
        # An office's edit, filled with long area names, may outgrow a field: say so now,
        # not when the composer sends it.
        AlertRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid(exc) from exc
    return web.json_response(body, dumps=dumps)


@routes.put("/api/v1/templates/{template_id}")
async def edit_template(request: web.Request) -> web.Response:
    office = require_role(request, Role.COMPOSER, Role.ADMIN)
    accept_query(request)
    built_in = _built_in(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed(
            'the body must be a JSON object: {"headline": {"zh", "en"}, "text": …, '
            '"instruction": …, "sms_text": …, "expires_in": seconds}'
        )
    try:
        edit = TemplateEdit.model_validate(body)
    except ValidationError as exc:
        raise invalid(exc) from exc
    changes = edit.changes()
    if not changes:
        raise ValidationFailed(
            "the edit changes nothing: give at least one of headline, text, instruction, "
            "sms_text or expires_in; DELETE returns a template to the built-in one"
        )
    store = _templates(request)
    # Fields left out keep what the office gave them before.
    merged = {**(await store.edit(office.id, built_in.id) or {}), **changes}
    await store.put_edit(office.id, built_in.id, merged)
    await audit(request, AuditAction.TEMPLATE_EDIT, built_in.id, {"fields": sorted(changes)})
    return web.json_response(apply_edit(built_in, merged).as_json(), dumps=dumps)


@routes.delete("/api/v1/templates/{template_id}")
async def reset_template(request: web.Request) -> web.Response:
    office = require_role(request, Role.COMPOSER, Role.ADMIN)
    accept_query(request)
    built_in = _built_in(request)
    if await _templates(request).reset(office.id, built_in.id):
        await audit(request, AuditAction.TEMPLATE_RESET, built_in.id)
    return web.json_response(built_in.as_json(), dumps=dumps)

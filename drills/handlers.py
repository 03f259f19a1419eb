"""HTTP handlers of the drills: the year's plan and its edits, running, reports, compliance
and the acknowledgement logs for review. Every request is scoped to the office's region."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from dispatcher.core.audit import AuditAction
from dispatcher.core.auth import Office
from dispatcher.core.clock import localized
from dispatcher.core.errors import NotFound, ValidationFailed
from dispatcher.core.people import Role
from dispatcher.core.regions import Level
from dispatcher.core.validation import invalid
from dispatcher.http.audit import audit
from dispatcher.http.principal import require_role
from dispatcher.http.requests import (
    accept_query,
    dumps,
    office_of,
    parse_int,
    parse_time,
    query_choice,
    read_json,
)
from dispatcher.http.state import OFFICES, TREE
from drills import compliance as compliance_mod
from drills import plan as plan_mod
from drills import report as report_mod
from drills.exports import BOM, LANGS, csv_text
from drills.models import FIRST_YEAR, LAST_YEAR, Drill, DrillStatus
from drills.report import DrillReport, entry_key
from drills.requests import AddRequest, MoveRequest, PlanRequest, ReasonRequest, _Body
from drills.service import DrillService

routes = web.RouteTableDef()
# The states an ack log entry may hold (the sweeper's no_ack among them), for ?state=.
ACK_STATES = ("received", "playing", "played", "failed", "cancelled", "no_ack")
DRILLS = web.AppKey("drills", DrillService)

_FORMATS = ("json", "csv")
_ACK_COLUMNS = ["drill", "township", "township_name", "alert_id", "terminal_id", "village",
                "village_name", "state", "terminal_at", "recorded_at", "counted",
                "late"]  # fmt: skip
# In the ack review, "late" is an ack after the window (the report's "late" is a slow one).
_ACK_ZH = {"late": "迟到回执（窗口关闭后）"}


def _service(request: web.Request) -> DrillService:
    service = request.app.get(DRILLS)
    if service is None:
        raise NotFound("drills are off: configure a province-level office or [drills] office")
    return service


async def _body(request: web.Request, model: type[_Body]) -> Any:
    body = await read_json(request)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise invalid(exc) from exc


def _region(request: web.Request, office: Office) -> str:
    tree, offices = request.app[TREE], request.app[OFFICES]
    code = request.query.get("region", office.region)
    tree.get(code)
    offices.require_within(office, [code])
    return code


def _name(request: web.Request, code: object) -> str:
    """The name of a region code from an ack log entry ("" for one the tree lacks)."""
    tree = request.app[TREE]
    return tree.name(code) if isinstance(code, str) and code in tree else ""


def _format(request: web.Request) -> str:
    return query_choice(request, "format", _FORMATS, "json") or "json"


def _year(request: web.Request, *, required: bool) -> int | None:
    raw = request.query.get("year")
    if raw is None:
        if required:
            raise ValidationFailed(
                "give the year, e.g. ?year=2027", details=[{"field": "year", "message": "missing"}]
            )
        return None
    return parse_int(request, "year", 0, FIRST_YEAR, LAST_YEAR)


def _lang(request: web.Request) -> str:
    """A CSV's header language: Chinese for people by default, ``?lang=en`` for the column
    keys scripts read."""
    return query_choice(request, "lang", LANGS, "zh") or "zh"


def _csv_response(text: str, name: str) -> web.Response:
    return web.Response(
        # The byte order mark makes Excel read the file as UTF-8 rather than GBK.
        text=BOM + text,
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def _addressed(request: web.Request) -> tuple[Office, DrillService, Drill]:
    """The office asking, the drills and the drill the path names, which must lie in the
    office's region: what every ``/api/v1/drills/{drill_id}`` handler starts from."""
    office = office_of(request)
    service = _service(request)
    drill_id = request.match_info["drill_id"]
    drill = await service.store.get(drill_id) if len(drill_id) <= 80 else None
    if drill is None:
        raise NotFound(f"no drill {drill_id!r}")
    request.app[OFFICES].require_within(office, [drill.township])
    return office, service, drill


def _model_response(model: BaseModel, status: int = 200) -> web.Response:
    """A drill, a compliance count or another model as the JSON answer."""
    return web.json_response(model.model_dump(mode="json"), status=status, dumps=dumps)


@routes.post("/api/v1/drills/plan")
async def plan(request: web.Request) -> web.Response:
    """Plan the year: a drill for every township under the region that has none that year."""
    office = require_role(request, Role.COORDINATOR)
    service = _service(request)
    body = await _body(request, PlanRequest)
    region = body.region or office.region
    request.app[TREE].get(region)
    request.app[OFFICES].require_within(office, [region])
    new, kept = await service.plan(body.year, region, office)
    await audit(
        request,
        AuditAction.DRILL_PLAN,
        f"{region}/{body.year}",
        {"year": body.year, "region": region, "planned": len(new), "already_planned": kept},
    )
    return web.json_response(
        {
            "year": body.year,
            "region": region,
            "planned": len(new),
            "already_planned": kept,
            "first": min(d.scheduled_at for d in new).isoformat() if new else None,
            "last": max(d.scheduled_at for d in new).isoformat() if new else None,
        },
        dumps=dumps,
    )


@routes.get("/api/v1/drills")
async def list_drills(request: web.Request) -> web.Response:
    office = office_of(request)
    accept_query(request, "region", "status", "year", "format", "lang")
    service = _service(request)
    region = _region(request, office)
    status = query_choice(request, "status", [s.value for s in DrillStatus])
    drills = await service.list(year=_year(request, required=False), region=region, status=status)
    lang = _lang(request)  # checked whatever the format: ?lang=xx is an error either way
    if _format(request) == "csv":
        return _csv_response(plan_mod.to_csv(drills, lang), f"drills-{region}.csv")
    return web.json_response(
        {
            "region": region,
            "total": len(drills),
            "drills": [d.model_dump(mode="json") for d in drills],
        },
        dumps=dumps,
    )


@routes.post("/api/v1/drills")
async def add_drill(request: web.Request) -> web.Response:
    office = require_role(request, Role.COORDINATOR)
    service = _service(request)
    body = await _body(request, AddRequest)
    request.app[TREE].get(body.township)
    request.app[OFFICES].require_within(office, [body.township])
    drill = await service.add(body.township, body.at, body.reason, office)
    await _edited(request, drill, "added", at=drill.scheduled_at.isoformat(), reason=body.reason)
    return _model_response(drill, status=201)


@routes.get("/api/v1/drills/compliance")
async def compliance(request: web.Request) -> web.Response:
    office = office_of(request)
    accept_query(request, "region", "year", "format", "lang")
    service = _service(request)
    region = _region(request, office)
    if request.app[TREE].level(region) is Level.VILLAGE:
        raise ValidationFailed(
            f"{region} is a village: compliance is counted per township and above",
            details=[{"field": "region", "message": "a village"}],
        )
    year = _year(request, required=True)
    assert year is not None  # noqa: S101  required above
    result = await service.compliance(year, region)
    lang = _lang(request)  # checked whatever the format: ?lang=xx is an error either way
    if _format(request) == "csv":
        return _csv_response(compliance_mod.to_csv(result, lang), f"compliance-{region}-{year}.csv")
    return _model_response(result)


@routes.get("/api/v1/drills/acks")
async def acks(request: web.Request) -> web.Response:
    """Drill acknowledgements for review: by drill, township, terminal and time range."""
    office = office_of(request)
    accept_query(
        request,
        "drill",
        "township",
        "terminal",
        "state",
        "region",
        "since",
        "until",
        "limit",
        "format",
        "lang",
    )
    service = _service(request)
    drill_id = request.query.get("drill")
    township = request.query.get("township")
    terminal = request.query.get("terminal")
    state = query_choice(request, "state", ACK_STATES)
    since = _when(request, "since")
    until = _when(request, "until")
    limit = parse_int(request, "limit", 10_000, 1, 1_000_000)
    if drill_id:
        drills = [d for d in [await service.store.get(drill_id)] if d is not None]
        if not drills:
            raise NotFound(f"no drill {drill_id!r}")
    elif township:
        request.app[TREE].get(township)
        drills = await service.store.of_township(township)
    else:
        drills = await service.list(year=None, region=_region(request, office))
    for drill in drills:
        request.app[OFFICES].require_within(office, [drill.township])
    rows: list[dict[str, Any]] = []
    for drill in drills:
        if drill.alert_id is None:
            continue
        if drill_id:
            # One drill's review: what came since its report is folded in first. Lists of
            # many drills read the logs as kept (the scheduler folds in the recent ones).
            await service.collect_late(drill)
        entries = await service.store.acks(drill.id)
        if not entries and drill.status is DrillStatus.RUNNING:
            entries = await service.live_acks(drill)
        is_late = await _lateness(service, drill, entries)
        for entry in entries:
            recorded = int(entry.get("recorded_ms", 0))
            if terminal and entry.get("terminal_id") != terminal:
                continue
            if state and entry.get("state") != state:
                continue
            if since and recorded < since:
                continue
            if until and recorded > until:
                continue
            rows.append(
                {
                    "drill": drill.id,
                    "township": drill.township,
                    "township_name": drill.township_name,
                    "alert_id": drill.alert_id,
                    "terminal_id": entry.get("terminal_id"),
                    "village": entry.get("region"),
                    "village_name": _name(request, entry.get("region")),
                    "state": entry.get("state"),
                    "terminal_at": entry.get("at"),
                    "recorded_at": datetime.fromtimestamp(recorded / 1000, UTC).isoformat(),
                    "counted": entry.get("result") == "1",
                    "late": is_late(entry),
                }
            )
    rows = rows[:limit]
    lang = _lang(request)  # checked whatever the format: ?lang=xx is an error either way
    if _format(request) == "csv":
        text = csv_text(_ACK_COLUMNS, localized(rows), lang, _ACK_ZH)
        return _csv_response(text, "drill-acks.csv")
    return web.json_response({"total": len(rows), "acks": rows}, dumps=dumps)


async def _lateness(
    service: DrillService, drill: Drill, entries: list[dict[str, Any]]
) -> Callable[[dict[str, Any]], bool]:
    """Whether an entry of a drill's review log is a late ack: its own mark, or for a log
    kept before entries were marked, as the drill's report decides (none is late before the
    drill is reported)."""
    if all("late" in entry for entry in entries):
        return lambda entry: entry.get("late") == "1"
    raw = await service.store.report(drill.id)
    if raw is None:
        return lambda entry: False
    report = DrillReport.model_validate_json(raw)
    window_end_ms = int(report.window_end.timestamp() * 1000)
    cut = report.on_time_through

    def late(entry: dict[str, Any]) -> bool:
        if int(entry.get("recorded_ms", 0)) > window_end_ms:
            return True
        entry_id = entry.get("id")
        return bool(cut and entry_id) and entry_key(str(entry_id)) > entry_key(str(cut))

    return late


def _when(request: web.Request, name: str) -> int | None:
    value = parse_time(request, name)
    return None if value is None else int(value.timestamp() * 1000)


@routes.get("/api/v1/drills/{drill_id:drill-[^/]+}")
async def get_drill(request: web.Request) -> web.Response:
    _, service, drill = await _addressed(request)
    accept_query(request)
    body = drill.model_dump(mode="json")
    body["history"] = [e.model_dump(mode="json") for e in await service.store.history(drill.id)]
    body["report"] = f"/api/v1/drills/{drill.id}/report" if drill.reported_at else None
    return web.json_response(body, dumps=dumps)


@routes.post("/api/v1/drills/{drill_id}/move")
async def move(request: web.Request) -> web.Response:
    require_role(request, Role.COORDINATOR)
    office, service, drill = await _addressed(request)
    body = await _body(request, MoveRequest)
    moved = await service.move(drill.id, body.at, body.reason, office)
    await _edited(
        request,
        drill,
        "moved",
        **{"from": drill.scheduled_at.isoformat(), "to": moved.scheduled_at.isoformat()},
        reason=body.reason,
    )
    return _model_response(moved)


@routes.post("/api/v1/drills/{drill_id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    require_role(request, Role.COORDINATOR)
    office, service, drill = await _addressed(request)
    body = await _body(request, ReasonRequest)
    cancelled = await service.cancel(drill.id, body.reason, office)
    await _edited(request, drill, "cancelled", reason=body.reason)
    return _model_response(cancelled)


@routes.post("/api/v1/drills/{drill_id}/run")
async def run_now(request: web.Request) -> web.Response:
    require_role(request, Role.COORDINATOR)
    office, service, drill = await _addressed(request)
    body = await read_json(request, optional=True)
    reason = (body or {}).get("reason", "run now") if isinstance(body, dict) else "run now"
    fired = await service.run_now(drill.id, str(reason)[:300] or "run now", office)
    await audit(
        request,
        AuditAction.DRILL_RUN_NOW,
        drill.id,
        {"township": drill.township, "alert_id": fired.alert_id, "reason": str(reason)},
    )
    return _model_response(fired, status=202)


async def _edited(request: web.Request, drill: Drill, edit: str, **detail: str) -> None:
    """The audit record of an edit of ``drill`` (added, moved, cancelled)."""
    await audit(
        request,
        AuditAction.DRILL_EDIT,
        drill.id,
        {"edit": edit, "township": drill.township, **detail},
    )


@routes.get("/api/v1/drills/{drill_id}/report")
async def get_report(request: web.Request) -> web.Response:
    _, service, drill = await _addressed(request)
    accept_query(request, "format", "lang")
    lang = _lang(request)  # checked whatever the format: ?lang=xx is an error either way
    fmt = _format(request)
    # Acks that came since the report are folded into its review log and shown as late.
    made = await service.collect_late(drill)
    if made is None:
        raise NotFound(
            f"drill {drill.id} is {drill.status.value}; its report exists once its window closed"
        )
    if fmt == "csv":
        return _csv_response(report_mod.to_csv(made, lang, with_late=True), f"{drill.id}.csv")
    return _model_response(made)

"""Console pages of the operations side: terminals, drills, people, templates.

Like the alerts' pages these are shells (``routes.render``): ops.js fills them from the JSON
API with the person's session, so a page shows only what the API lets that person see and
every button is checked again by the API. What the server puts in a page is the query it was
opened with, checked here so a bad link gives a clear page rather than a broken one."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from aiohttp import web

from dispatcher.console.routes import render
from dispatcher.core.clock import display_zone
from dispatcher.core.people import Person
from dispatcher.http.principal import person_of
from drills.models import FIRST_YEAR, LAST_YEAR

routes = web.RouteTableDef()

# What a link may carry into a page; anything else is dropped, the page then shows its default.
_REGION = re.compile(r"^[0-9]{2}(?:[0-9]{2}(?:[0-9]{2}(?:[0-9]{3}(?:[0-9]{3})?)?)?)?$")
_DRILL_ID = re.compile(r"^drill-[0-9A-Za-z-]{1,70}$")
_TERMINAL = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_STATES = ("received", "playing", "played", "failed")
_VIEWS = ("month", "list")


def _roles(person: Person | None) -> str:
    """The person's roles, space separated, for the scripts to show the buttons they may use
    (the API refuses the others anyway)."""
    return " ".join(sorted(person.roles)) if person is not None else ""


def _this_year() -> int:
    return datetime.now(display_zone()).year


def _year(request: web.Request) -> int:
    raw = request.query.get("year", "")
    if raw.isascii() and raw.isdigit() and FIRST_YEAR <= int(raw) <= LAST_YEAR:
        return int(raw)
    return _this_year()


def _month(request: web.Request) -> int:
    raw = request.query.get("month", "")
    if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 12:
        return int(raw)
    return datetime.now(display_zone()).month


def _matching(request: web.Request, name: str, pattern: re.Pattern[str]) -> str:
    value = request.query.get(name, "")
    return value if pattern.fullmatch(value) else ""


def _page(request: web.Request, template: str, active: str, **context: Any) -> web.Response:
    return render(request, template, active, roles=_roles(person_of(request)), **context)


@routes.get("/terminals")
async def terminals_page(request: web.Request) -> web.Response:
    return _page(
        request, "terminals.html", "terminals", region=_matching(request, "region", _REGION)
    )


@routes.get("/drills")
async def drills_page(request: web.Request) -> web.Response:
    view = request.query.get("view", "month")
    return _page(
        request,
        "drills.html",
        "drills",
        year=_year(request),
        month=_month(request),
        view=view if view in _VIEWS else "month",
        region=_matching(request, "region", _REGION),
        years=range(_this_year() - 2, _this_year() + 3),
    )


@routes.get("/drills/compliance")
async def compliance_page(request: web.Request) -> web.Response:
    return _page(
        request,
        "drill_compliance.html",
        "drills",
        year=_year(request),
        region=_matching(request, "region", _REGION),
        years=range(_this_year() - 2, _this_year() + 3),
    )


@routes.get("/drills/acks")
async def acks_page(request: web.Request) -> web.Response:
    state = request.query.get("state", "")
    return _page(
        request,
        "drill_acks.html",
        "drills",
        drill=_matching(request, "drill", _DRILL_ID),
        township=_matching(request, "township", _REGION),
        terminal=_matching(request, "terminal", _TERMINAL),
        state=state if state in _STATES else "",
        states=_STATES,
    )


@routes.get("/drills/{drill_id}")
async def drill_page(request: web.Request) -> web.Response:
    drill_id = request.match_info["drill_id"]
    if not _DRILL_ID.fullmatch(drill_id):
        raise web.HTTPFound("/drills")
    return _page(request, "drill.html", "drills", drill_id=drill_id)


@routes.get("/people")
async def people_page(request: web.Request) -> web.Response:
    return _page(request, "people.html", "people", all_roles=_ALL_ROLES)


@routes.get("/templates")
async def templates_page(request: web.Request) -> web.Response:
    return _page(request, "templates.html", "templates")


_ALL_ROLES = ("composer", "approver", "coordinator", "viewer", "admin")

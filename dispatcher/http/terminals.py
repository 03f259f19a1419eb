"""``/api/v1/terminals``: register terminals (all rows or none) and list them by region."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from dispatcher.core.errors import RegionError, ValidationFailed
from dispatcher.core.models import TerminalIn
from dispatcher.core.regions import RegionTree
from dispatcher.core.validation import refuse_rows, validation_details
from dispatcher.http.requests import dumps, office_of, parse_int, read_json
from dispatcher.http.state import OFFICES, STORE, TREE

MAX_TERMINALS_PER_REQUEST = 20_000

routes = web.RouteTableDef()


@routes.get("/api/v1/terminals")
async def list_terminals(request: web.Request) -> web.Response:
    office = office_of(request)
    tree, offices, store = request.app[TREE], request.app[OFFICES], request.app[STORE]
    code = request.query.get("region", office.region)
    tree.get(code)
    offices.require_within(office, [code])
    limit = parse_int(request, "limit", 100, 1, 5000)
    offset = parse_int(request, "offset", 0, 0, 10_000_000)
    total, items = await store.list_terminals(code, limit=limit, offset=offset)
    return web.json_response(
        {"region": code, "total": total, "offset": offset, "terminals": items}, dumps=dumps
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

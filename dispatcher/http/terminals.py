"""``/api/v1/terminals``: register terminals (all rows or none) and list them by region."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from dispatcher.core.models import TerminalIn
from dispatcher.core.regions import RegionTree
from dispatcher.core.validation import parse_rows, region_problem
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
    seen: dict[str, int] = {}  # terminal id: the row that has it

    def accept(terminal: TerminalIn, row: int) -> dict[str, Any] | None:
        problem = region_problem(tree, terminal.region)
        if problem is not None:
            return problem
        if terminal.id in seen:
            return {
                "field": "id",
                "message": f"terminal {terminal.id!r} also at {row_label} {seen[terminal.id]}",
                "type": "duplicate",
            }
        seen[terminal.id] = row
        return None

    return parse_rows(
        items,
        TerminalIn,
        accept,
        noun="terminal",
        shape='[{"id", "region", "kind"}]',
        max_items=MAX_TERMINALS_PER_REQUEST,
        row_label=row_label,
        row_numbers=row_numbers,
    )


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

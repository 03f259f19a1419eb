"""``/api/v1/regions``: a region of the five-level tree, its children and its terminals."""

from __future__ import annotations

from aiohttp import web

from dispatcher.core.errors import NotFound, UnknownRegion
from dispatcher.http.requests import dumps, office_of
from dispatcher.http.state import STORE, TREE

routes = web.RouteTableDef()


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
        dumps=dumps,
    )

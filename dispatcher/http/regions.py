"""``/api/v1/regions``: a region of the five-level tree, its children and its terminals."""

from __future__ import annotations

from aiohttp import web

from dispatcher.core.errors import NotFound, UnknownRegion
from dispatcher.core.regions import Level
from dispatcher.http.requests import accept_query, dumps, office_of
from dispatcher.http.state import STORE, TREE

routes = web.RouteTableDef()


@routes.get("/api/v1/regions/{code}")
async def get_region(request: web.Request) -> web.Response:
    office_of(request)
    accept_query(request)
    tree, store = request.app[TREE], request.app[STORE]
    code = request.match_info["code"]
    try:
        region = tree.get(code)
    except UnknownRegion as exc:
        raise NotFound(exc.message, details=exc.details) from exc
    children = tree.children(code)
    # Terminals per child: before issuing, an office sees which parts of its area no
    # loudspeaker covers (a region has a few dozen children at most).
    counts = [await store.count_terminals(c.code) for c in children]
    return web.json_response(
        {
            "code": region.code,
            "name": region.name,
            "level": region.level.name.lower(),
            "level_label": region.level.label_zh,
            "parent": region.parent,
            "path": [{"code": r.code, "name": r.name} for r in tree.path(code)],
            "topic": tree.topic(code),
            # A township with no village of its own: no drill is planned or owed for it.
            "virtual": tree.is_virtual(code),
            "villages": len(tree.villages(code)),
            "children": [
                {
                    "code": c.code,
                    "name": c.name,
                    "virtual": tree.is_virtual(c.code),
                    "villages": len(tree.villages(c.code)),
                    "terminals": n,
                }
                for c, n in zip(children, counts, strict=True)
            ],
            # A township's villages with no registered terminal (placeholder ones left out).
            "villages_without_terminal": [
                {"code": c.code, "name": c.name}
                for c, n in zip(children, counts, strict=True)
                if n == 0 and c.level is Level.VILLAGE and not tree.is_virtual(c.code)
            ],
            "terminals": await store.count_terminals(code),
        },
        dumps=dumps,
    )

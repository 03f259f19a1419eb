"""``/api/v1/escalations``: terminals failed after their last resend."""

from __future__ import annotations

from aiohttp import web

from dispatcher.http.requests import dumps, office_of, parse_int, visible_alert
from dispatcher.http.state import STORE, TREE

routes = web.RouteTableDef()


@routes.get("/api/v1/escalations")
async def list_escalations(request: web.Request) -> web.Response:
    """Terminals failed after their last resend, newest first, inside the office's region."""
    office = office_of(request)
    store, tree = request.app[STORE], request.app[TREE]
    limit = parse_int(request, "limit", 100, 1, 1000)
    alert_id = request.query.get("alert_id")
    if alert_id is not None:
        await visible_alert(request, office, alert_id)
    records = await store.escalations(alert_id=alert_id, limit=limit * 4 if not alert_id else limit)
    mine = [
        r for r in records if r.get("region") in tree and tree.is_within(r["region"], office.region)
    ]
    return web.json_response({"escalations": mine[:limit], "count": len(mine[:limit])}, dumps=dumps)

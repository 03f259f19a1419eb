"""``/api/v1/escalations``: terminals failed after their last resend."""

from __future__ import annotations

from aiohttp import web

from dispatcher.core.errors import ValidationFailed
from dispatcher.core.wire import ALERT_ID, ALERT_ID_PATTERN
from dispatcher.http.requests import (
    accept_query,
    dumps,
    office_of,
    parse_int,
    query_choice,
    visible_alert,
)
from dispatcher.http.state import STORE, TREE
from dispatcher.store.sweeps import ESCALATION_STATES

routes = web.RouteTableDef()


@routes.get("/api/v1/escalations")
async def list_escalations(request: web.Request) -> web.Response:
    """Terminals failed after their last resend, newest first, inside the office's region."""
    office = office_of(request)
    accept_query(request, "limit", "alert_id", "state")
    store, tree = request.app[STORE], request.app[TREE]
    limit = parse_int(request, "limit", 100, 1, 1000)
    # open: still unheard; resolved: the terminal played after all (``resolved_at``).
    state = query_choice(request, "state", ESCALATION_STATES)
    alert_id = request.query.get("alert_id")
    if alert_id is not None:
        if not ALERT_ID.fullmatch(alert_id):
            raise ValidationFailed(
                f"alert_id must be an alert id ({ALERT_ID_PATTERN}); leave it out for all alerts",
                details=[{"field": "alert_id", "message": f"got {alert_id[:90]!r}"}],
            )
        await visible_alert(request, office, alert_id)
    records = await store.escalations(
        alert_id=alert_id, limit=limit * 4 if not alert_id else limit, state=state
    )
    mine = [
        r for r in records if r.get("region") in tree and tree.is_within(r["region"], office.region)
    ]
    return web.json_response({"escalations": mine[:limit], "count": len(mine[:limit])}, dumps=dumps)

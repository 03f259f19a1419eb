"""``/api/v1/alerts/{id}/events``: an alert's delivery as a Server-Sent Events stream.

Events: ``counts`` ({"totals", "regions": {code: counts}}) whenever a figure changed,
``resend`` when the sweeper resent to silent terminals, ``escalation`` for each terminal given
up on (and again when it resolves), ``done`` once nothing is pending (then the stream ends).
A heartbeat comment every 15 s keeps proxies from closing an idle stream. Each stream reads
Redis at most every 0.5 s, whatever the acks' rate: a thousand open pages cost a bounded load.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import structlog
from aiohttp import web
from aiohttp_sse import sse_response

from dispatcher.core.auth import Office
from dispatcher.core.models import Alert
from dispatcher.core.regions import Level, RegionTree
from dispatcher.http.alerts import regions_shown
from dispatcher.http.requests import accept_query, office_of, visible_alert
from dispatcher.http.state import STORE, TREE
from dispatcher.store.delivery import DeliveryCounts

log = structlog.get_logger(__name__)

routes = web.RouteTableDef()

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0
_LEVELS = (Level.CITY, Level.COUNTY, Level.TOWNSHIP)


def visible_regions(tree: RegionTree, alert: Alert, office: Office) -> list[str]:
    """The province, cities, counties and townships of the alert's areas that the office may
    watch: those inside its region, and those above it (its own path to the province)."""
    codes = regions_shown(tree, alert.areas, _LEVELS)
    return sorted(
        code
        for code in codes
        if code in tree
        and tree.level(code) <= Level.TOWNSHIP
        and (tree.is_within(code, office.region) or tree.is_within(office.region, code))
    )


class _Watcher:
    """What one stream has told its page so far, to send only what changed."""

    def __init__(self, request: web.Request, alert: Alert, office: Office) -> None:
        self.store = request.app[STORE]
        self.tree = request.app[TREE]
        self.alert = alert
        self.office = office
        self.codes = visible_regions(self.tree, alert, office)
        self.last_counts: dict[str, Any] | None = None
        self.resends = 0
        self.escalations: dict[str, str] = {}

    async def poll(self) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        """The events to send now, and whether the alert is done."""
        events: list[tuple[str, dict[str, Any]]] = []
        report = await self.store.delivery(self.alert.id, self.codes)
        root = self.alert.areas[0][:2]
        totals = report.by_region.get(root, DeliveryCounts()).as_dict()
        counts = {
            "totals": totals,
            "regions": {
                code: {k: c[k] for k in ("expected", "received", "played", "failed", "pending")}
                for code in self.codes
                if (c := report.by_region.get(code, DeliveryCounts()).as_dict())["expected"]
            },
        }
        if counts != self.last_counts:
            self.last_counts = counts
            events.append(("counts", counts))
        dispatch = report.dispatch
        resends = int(dispatch.get("resends", 0))
        if resends > self.resends:
            events.append(("resend", {"resends": resends, "new": resends - self.resends}))
            self.resends = resends
        if int(dispatch.get("escalated", 0)) or self.escalations:
            for record in await self.store.escalations(alert_id=self.alert.id, limit=1000):
                region = str(record.get("region", ""))
                if region not in self.tree or not self.tree.is_within(region, self.office.region):
                    continue
                key = str(record.get("terminal_id"))
                if self.escalations.get(key) != record.get("state"):
                    self.escalations[key] = str(record.get("state"))
                    events.append(("escalation", record))
        done = bool(dispatch.get("dispatched_at")) and totals["pending"] == 0
        done = done or bool(dispatch.get("cancelled_by")) or self.alert.expired()
        return events, done


@routes.get("/api/v1/alerts/{alert_id}/events")
async def alert_events(request: web.Request) -> web.StreamResponse:
    office = office_of(request)
    accept_query(request)
    alert = await visible_alert(request, office)
    watcher = _Watcher(request, alert, office)
    # The first read before the stream opens: a store that is down answers 503, not a stream.
    events, done = await watcher.poll()
    async with sse_response(request, ping_interval=HEARTBEAT_SECONDS) as stream:
        while stream.is_connected():
            for name, data in events:
                await stream.send(json.dumps(data, ensure_ascii=False), event=name)
            if done:
                await stream.send(json.dumps(watcher.last_counts or {}), event="done")
                break
            # Polling, not waiting on a signal: the counters change in Lua scripts of other
            # engine processes, and a bounded rate per stream is the point.
            await asyncio.sleep(POLL_SECONDS)
            events, done = await watcher.poll()
    log.debug("live.closed", alert_id=alert.id, done=done)
    return stream

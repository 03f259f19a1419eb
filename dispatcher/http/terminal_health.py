"""``GET /api/v1/terminals/health``: the terminals of a region and of each region one level
down: how many, online and offline now (their last state message), when one was last seen, and
how many failed or never answered in the recent alerts. What the console's terminals page shows
while an office drills down from the province to a township's loudspeakers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from dispatcher.core.regions import Level, RegionTree
from dispatcher.http.requests import accept_query, dumps, office_of, parse_int
from dispatcher.http.state import OFFICES, STORE, TREE
from dispatcher.store.store import Store

routes = web.RouteTableDef()

# Alerts of the last ``days`` (7 by default, at most 90) are looked at, the newest 100 at most:
# enough to spot a loudspeaker that keeps failing, bounded for a province's page.
DEFAULT_DAYS = 7
MAX_DAYS = 90
MAX_ALERTS = 100
# Terminals are listed one by one from a township down; above that the counts per region say
# more than a list of thousands would.
TERMINALS_SHOWN = 500
# Per-terminal counts need each alert's whole terminal table: read only for the alerts that
# failed somewhere in the township, so one province-wide alert costs one small read.
LISTED_FROM = Level.TOWNSHIP
# Counters per region stop at townships (dispatcher.store.keys.COUNTED_PREFIXES).
COUNTED_DOWN_TO = Level.TOWNSHIP


@dataclass(slots=True)
class Tally:
    """The terminals of one region."""

    terminals: int = 0
    online: int = 0
    offline: int = 0
    unknown: int = 0  # registered, never reported a state
    last_seen: str | None = None
    failures: int = 0  # failed or no answer after the resends, summed over the recent alerts

    def add(self, state: dict[str, Any] | None) -> None:
        self.terminals += 1
        if state is None:
            self.unknown += 1
            return
        if state.get("state") == "online":
            self.online += 1
        else:
            self.offline += 1
        seen = state.get("at")
        # ISO times of one zone sort as text; the ingester keeps the terminal's own offset,
        # so compare them as times.
        if isinstance(seen, str) and (self.last_seen is None or _later(seen, self.last_seen)):
            self.last_seen = seen

    def as_dict(self) -> dict[str, Any]:
        return {
            "terminals": self.terminals,
            "online": self.online,
            "offline": self.offline,
            "unknown": self.unknown,
            "last_seen": self.last_seen,
            "failures": self.failures,
        }


@dataclass(slots=True)
class Health:
    totals: Tally = field(default_factory=Tally)
    children: dict[str, Tally] = field(default_factory=dict)
    terminals: list[dict[str, Any]] = field(default_factory=list)


def _later(a: str, b: str) -> bool:
    try:
        return datetime.fromisoformat(a) > datetime.fromisoformat(b)
    except ValueError:
        return False


def _region(tree: RegionTree, code: str) -> dict[str, Any]:
    region = tree.get(code)
    return {"code": code, "name": region.name, "level": region.level.label_en}


@routes.get("/api/v1/terminals/health")
async def terminal_health(request: web.Request) -> web.Response:
    office = office_of(request)
    accept_query(request, "region", "days")
    tree, store = request.app[TREE], request.app[STORE]
    code = request.query.get("region", office.region)
    region = tree.get(code)
    request.app[OFFICES].require_within(office, [code])
    days = parse_int(request, "days", DEFAULT_DAYS, 1, MAX_DAYS)
    since = datetime.now(UTC) - timedelta(days=days)

    child_level = None if region.level is Level.VILLAGE else Level(region.level + 1)
    health = Health()
    for below in tree.children(code):
        health.children[below.code] = Tally()
    total, registered = await store.list_terminals(code, limit=10_000_000, offset=0)
    listed = region.level >= LISTED_FROM
    for terminal in registered:
        state = terminal["state"]
        health.totals.add(state)
        village = terminal["region"] or ""
        if child_level is not None:
            child = village[: child_level.code_length]
            health.children.setdefault(child, Tally()).add(state)
        if listed:
            health.terminals.append(
                {
                    "id": terminal["id"],
                    "region": village,
                    "region_name": tree.name(village) if village in tree else "",
                    "kind": terminal["kind"],
                    "state": state.get("state") if state else None,
                    "last_seen": state.get("at") if state else None,
                    "failures": 0,
                }
            )

    alerts = [a for a in await store.list_alerts(limit=MAX_ALERTS) if a.sent >= since]
    await _count_failures(store, code, region.level, child_level, alerts, health)
    children = [
        {**_region(tree, child), **tally.as_dict()}
        for child, tally in sorted(health.children.items())
        if child in tree
    ]
    return web.json_response(
        {
            "region": _region(tree, code),
            "path": [{"code": r.code, "name": r.name} for r in tree.path(code)],
            "since": since.isoformat(),
            "days": days,
            "alerts_considered": len(alerts),
            "totals": health.totals.as_dict(),
            "children": children,
            "terminals_total": total if listed else 0,
            "terminals": health.terminals[:TERMINALS_SHOWN],
        },
        dumps=dumps,
    )


async def _count_failures(
    store: Store,
    code: str,
    level: Level,
    child_level: Level | None,
    alerts: list[Any],
    health: Health,
) -> None:
    """Failures (failed, or silent after the last resend) of the recent alerts, for the region,
    its children and, from a township down, each terminal."""
    counted_children = child_level is not None and child_level <= COUNTED_DOWN_TO
    township = code[: Level.TOWNSHIP.code_length] if level >= Level.TOWNSHIP else None
    # A village has no counter of its own: its township's says whether to look closer.
    counter = township or code
    codes = [counter, *(health.children if counted_children else [])]
    by_id = {t["id"]: t for t in health.terminals}
    for alert in alerts:
        report = await store.delivery(alert.id, codes)
        here = report.by_region.get(counter)
        if here is None or here.failed + here.no_ack == 0:
            continue
        if township is None:
            health.totals.failures += here.failed + here.no_ack
            for child, tally in health.children.items():
                counts = report.by_region.get(child)
                if counts is not None:
                    tally.failures += counts.failed + counts.no_ack
            continue
        for row in await store.alert_terminals(alert.id):
            if row["state"] not in ("failed", "no_ack") or not row["region"].startswith(code):
                continue
            health.totals.failures += 1
            if child_level is not None:
                child = row["region"][: child_level.code_length]
                if child in health.children:
                    health.children[child].failures += 1
            if row["id"] in by_id:
                by_id[row["id"]]["failures"] += 1

"""``/healthz`` (the process answers) and ``/readyz`` (Redis and both MQTT links are up)."""

from __future__ import annotations

from aiohttp import web

from dispatcher.http.state import MQTT_LINKS, STORE

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    app = request.app
    redis_ok = await app[STORE].ping()
    mqtt_ok = all(link.connected.is_set() for link in app[MQTT_LINKS])
    status = 200 if redis_ok and mqtt_ok else 503
    return web.json_response(
        {"redis": redis_ok, "mqtt": mqtt_ok, "ready": status == 200}, status=status
    )

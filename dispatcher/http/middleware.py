"""The one place errors become HTTP answers: ``EbdError`` → its status and the JSON error body,
aiohttp's own 4xx → the same body, anything unexpected → logged once with its traceback, 500."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from dispatcher.core.errors import EbdError
from dispatcher.http.requests import auth_throttle, dumps, source_of
from dispatcher.http.state import API

log = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    blocked = auth_throttle(request.app).blocked_for(source_of(request))
    if blocked > 0:
        # Too many failed authentications from this address: nothing it sends is looked at,
        # a good token neither, until the minute is over.
        wait = math.ceil(blocked)
        return web.json_response(
            error_body(
                "too_many_requests",
                f"too many failed authentications from {source_of(request)}; "
                f"try again in {wait} s with a valid token",
            ),
            status=429,
            headers={"Retry-After": str(wait)},
        )
    try:
        return await handler(request)
    except EbdError as exc:
        if exc.status >= 500:
            log.error("api.error", path=request.path, code=exc.code, error=exc.message)
        return web.json_response(
            error_body(exc.code, exc.message, exc.details), status=exc.status, dumps=dumps
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        messages = {
            404: "no such endpoint; see /api/v1/openapi.json",
            405: f"method {request.method} is not allowed here",
            413: "request body too large: send at most "
            f"{request.app[API].max_body_bytes} bytes (split terminal lists)",
        }
        return web.json_response(
            error_body(exc.reason.lower().replace(" ", "_"), messages.get(exc.status, exc.reason)),
            status=exc.status,
        )
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("api.unexpected_error", path=request.path, method=request.method)
        return web.json_response(
            error_body("internal", "internal error; the engine logged the details"), status=500
        )

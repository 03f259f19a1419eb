"""The one place errors become HTTP answers: ``EbdError`` → its status and the JSON error body,
aiohttp's own 4xx → the same body, anything unexpected → logged once with its traceback, 500."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from dispatcher.core.errors import EbdError
from dispatcher.http.requests import auth_throttle, dumps, source_of
from dispatcher.http.state import API

log = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Headers that describe aiohttp's plain-text error body, replaced by the JSON one's.
_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})


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
        # The exception's own headers say what to do next (a 405's Allow); its body's do not.
        kept = {k: v for k, v in exc.headers.items() if k.lower() not in _BODY_HEADERS}
        return web.json_response(
            error_body(exc.reason.lower().replace(" ", "_"), messages.get(exc.status, exc.reason)),
            status=exc.status,
            headers=kept,
        )
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("api.unexpected_error", path=request.path, method=request.method)
        return web.json_response(
            error_body("internal", "internal error; the engine logged the details"), status=500
        )


class _JsonErrorHandler(RequestHandler):
    """A connection whose requests aiohttp could not even parse (a raw byte that is not ASCII
    in the URL, a malformed header line) are answered with the JSON error body too."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own logs the error and refuses when part of an answer is already out.
        plain = super().handle_error(request, status, exc, message)
        if status >= 500:
            body = error_body("internal", "internal error; the engine logged the details")
        else:
            reason = (message or "malformed request").strip().splitlines()[0]
            body = error_body(
                "bad_request",
                f"the request could not be read: {reason}; percent-encode what is not ASCII "
                "in the URL (e.g. %FF) and send headers as 'Name: value' lines",
            )
        answer = web.json_response(body, status=plain.status)
        answer.force_close()
        return answer


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """``web.AppRunner`` whose connections give every answer, even to a request that never
    reached the application, the JSON error body (``_JsonErrorHandler``)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The application builds its server itself; this one differs only in the connections
        # it makes, and adds no state, so its class is swapped rather than the server rebuilt.
        server.__class__ = _JsonErrorServer
        return server

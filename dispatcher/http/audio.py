"""Announcement audio over HTTP: an office's recording in (``POST /api/v1/audio``), every
stored file out (``GET /audio/<sha256>.wav``), and the announcement a preview lets a composer
hear (``preview_audio``).

The files are served without a token: terminals have none for HTTP, an announcement is public
by nature, and its name is its hash, which the signed payload carries. Only names of exactly
that shape are looked up, so no path is ever built from what a client sent. The work itself is
the loudspeaker adapter's (``adapters.loudspeaker.announcement.Announcer``), handed in by the
composition root through ``AUDIO``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from dispatcher.core.errors import NotFound, PayloadTooLarge, ValidationFailed
from dispatcher.core.models import Alert, AlertRequest
from dispatcher.core.people import Role
from dispatcher.http.principal import require_role
from dispatcher.http.requests import accept_query, dumps, office_of, visible_alert

routes = web.RouteTableDef()

# Served files never change (the name is the content's hash).
IMMUTABLE = "public, max-age=31536000, immutable"


class AudioPort(Protocol):
    """What the HTTP layer needs of the announcement audio."""

    @property
    def max_upload_bytes(self) -> int: ...

    async def upload(self, data: bytes, content_type: str) -> dict[str, Any]:
        """Check and store a recording; its ``{url, sha256, duration, codec}``."""
        ...

    def has_recording(self, sha256: str) -> bool: ...

    def file_for(self, name: str) -> tuple[Path, str, str] | None:
        """(path, content type, sha256) of a served name, None if there is no such file."""
        ...

    async def preview(self, req: AlertRequest | Alert) -> dict[str, Any] | None:
        """The announcement of ``req`` (rendered now if need be, for a bounded time)."""
        ...


AUDIO = web.AppKey("audio", AudioPort)


async def preview_audio(app: web.Application, req: AlertRequest) -> dict[str, Any] | None:
    """The ``audio`` a preview shows: what the loudspeakers will play, None when it is not
    ready in time (terminals would speak the text) or the engine renders none."""
    port = app.get(AUDIO)
    return None if port is None else await port.preview(req)


def check_recording(app: web.Application, req: AlertRequest) -> None:
    """422 when the alert names a recording this engine does not hold."""
    port = app.get(AUDIO)
    if req.recording is not None and (port is None or not port.has_recording(req.recording)):
        raise ValidationFailed(
            f"recording {req.recording} is not a recording stored here: upload it first "
            "(POST /api/v1/audio) and name the sha256 of that answer",
            details=[{"field": "recording", "message": "unknown recording"}],
        )


@routes.get("/api/v1/alerts/{alert_id}/audio")
async def alert_audio(request: web.Request) -> web.Response:
    """The announcement of an issued alert, to listen to: rendered now if it was not (an alert
    issued without a preview went out with ``audio: null``), within the preview's wait; its
    resends carry it from then on. ``audio`` null: not ready in time, or no espeak-ng."""
    office = office_of(request)
    accept_query(request)
    alert = await visible_alert(request, office)
    port = request.app.get(AUDIO)
    described = None if port is None else await port.preview(alert)
    return web.json_response({"alert_id": alert.id, "audio": described}, dumps=dumps)


@routes.post("/api/v1/audio")
async def upload(request: web.Request) -> web.Response:
    """An office's own recording (PCM WAV): checked, stored once by its hash, described."""
    require_role(request, Role.COMPOSER)
    accept_query(request)
    port = request.app[AUDIO]
    limit = port.max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the recording is over {limit} bytes; shorten it")
    # Read here rather than with request.read(): recordings may exceed api.max_body_bytes.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the recording is over {limit} bytes; shorten it")
        chunks.append(chunk)
    described = await port.upload(b"".join(chunks), request.content_type)
    return web.json_response(described, status=201, dumps=dumps)


@routes.get("/audio/{name}")
async def serve(request: web.Request) -> web.StreamResponse:
    """A stored announcement or recording, cacheable forever; 404 for any other name."""
    found = request.app[AUDIO].file_for(request.match_info["name"])
    if found is None:
        raise NotFound("no such audio file: names are <sha256>.wav")
    path, content_type, sha256 = found
    etag = f'"{sha256}"'
    headers = {"Cache-Control": IMMUTABLE, "ETag": etag, "Content-Type": content_type}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    try:
        body = await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        raise NotFound("no such audio file: names are <sha256>.wav") from None
    return web.Response(body=body, headers=headers)

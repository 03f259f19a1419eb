"""``POST /api/v1/previews``, and ``build_preview``: what an alert would reach before it is
sent (``dispatcher.core.preview`` computes it from what this reads). ``POST /api/v1/alerts``
with ``?dry_run=1`` and the approvals show the same preview."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from aiohttp import web
from pydantic import ValidationError

from dispatcher.core.auth import Office
from dispatcher.core.errors import ValidationFailed
from dispatcher.core.models import AlertRequest, Channel
from dispatcher.core.preview import SmsShown, summarise
from dispatcher.core.validation import invalid
from dispatcher.http.audio import check_recording, preview_audio
from dispatcher.http.requests import accept_query, dumps, office_of, read_json
from dispatcher.http.state import OFFICES, SMS, STORE, TREE
from dispatcher.store.preview import PreviewStore

routes = web.RouteTableDef()


class SmsPreviewer(Protocol):
    """How the SMS channel would word an alert, and what a segment costs."""

    @property
    def cost_per_segment(self) -> float: ...

    def texts(self, office_id: str, req: AlertRequest) -> Mapping[str, SmsShown]:
        """The alert's SMS by language, as the planner would compose it for this office."""
        ...


# Filled by the composition root (``adapters.sms.preview.SmsTextPreview``); without it a
# preview shows no SMS text and texts nobody.
SMS_PREVIEWER = web.AppKey("sms_previewer", SmsPreviewer)


async def build_preview(
    app: web.Application, office: Office, req: AlertRequest, cover: list[str]
) -> dict[str, Any]:
    """The preview of ``req`` from ``office`` for ``cover`` (the checked minimal cover of its
    areas): see ``dispatcher.core.preview``. Reads the registry and the recipient list in
    pipelined batches; writes nothing."""
    reads = PreviewStore(app[STORE].redis)
    previewer = app.get(SMS_PREVIEWER)
    # The previewer words texts even without gateways; only an engine with them texts.
    texting = SMS in app and previewer is not None
    terminals = await reads.terminals_below(cover)
    # Read for a loudspeaker alert too: it is texted to those who cannot hear it.
    persons = await reads.recipients_below(cover) if texting else []
    return summarise(
        app[TREE],
        office.id,
        req,
        cover,
        terminals,
        persons,
        previewer.texts(office.id, req) if previewer is not None else None,
        previewer.cost_per_segment if previewer is not None else 0.0,
        sms_channel=texting,
    )


@routes.post("/api/v1/previews")
async def preview(request: web.Request) -> web.Response:
    """What ``POST /api/v1/alerts`` with the same body would reach; nothing is stored, sent
    or audited. ``reachable`` is false when the areas hold no terminal and no recipient."""
    office = office_of(request)
    accept_query(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be a JSON object describing the alert")
    try:
        alert_request = AlertRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid(exc) from exc
    if Channel.SMS in alert_request.channels and SMS not in request.app:
        raise ValidationFailed(
            "channel 'sms' is not configured on this engine (no [sms] gateways); "
            "use ['loudspeaker']",
            details=[{"field": "channels", "message": "sms not configured"}],
        )
    tree, offices = request.app[TREE], request.app[OFFICES]
    for code in alert_request.areas:
        tree.get(code)
    offices.require_within(office, alert_request.areas)
    cover = tree.cover(alert_request.areas)
    check_recording(request.app, alert_request)
    result = await build_preview(request.app, office, alert_request, cover)
    result["audio"] = await preview_audio(request.app, alert_request)
    return web.json_response(result, dumps=dumps)

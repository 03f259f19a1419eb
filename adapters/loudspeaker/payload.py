"""An alert as the loudspeaker terminals get it: the v1 payload of docs/protocol.md, as bytes.

The outbox worker publishes these bytes on the cover's alert topics and the sweeper resends the
same bytes on a terminal's cmd topic, so one function decides what a terminal sees. Terminals
take only signed messages: ``encode_signed`` wraps the payload in the JWS of
``dispatcher.core.signing``, once per alert, and a resend is those same signed bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from dispatcher.core.models import Alert
from dispatcher.core.signing import Signer
from dispatcher.core.wire import PAYLOAD_VERSION

# The payload's ``audio`` for an alert, or None (``Announcer.descriptor``: never waits).
AudioLookup = Callable[[Alert], dict[str, Any] | None]
# The payload's ``audio_regions``: per-region variants (``Announcer.regional``: never waits).
RegionsLookup = Callable[[Alert], list[dict[str, Any]]]


def alert_payload(
    alert: Alert,
    audio: dict[str, Any] | None = None,
    regions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The v1 alert payload as a JSON object; ``audio``: its rendered announcement;
    ``regions``: the variants of regions with their own announcement settings. The two
    accessibility fields (``speech_text``, ``audio_regions``) appear only when set, so every
    other alert's payload stays byte for byte what it was (older terminals ignore them)."""
    body: dict[str, Any] = {
        "v": PAYLOAD_VERSION,
        "id": alert.id,
        "msg_type": alert.msg_type.value,
        "status": alert.status.value,
        "severity": alert.severity.value,
        "event": alert.event,
        "event_code": alert.event_code,
        "headline": alert.headline,
        "text": alert.text,
        "instruction": alert.instruction,
        "sent": alert.sent.isoformat(),
        "expires": alert.expires.isoformat(),
        "areas": alert.areas,
        "references": alert.references,
        "repeat": alert.repeat,
        "audio": audio,
    }
    if alert.speech_text:
        body["speech_text"] = alert.speech_text
    if regions:
        body["audio_regions"] = regions
    return body


def encode_alert(
    alert: Alert, audio: AudioLookup | None = None, regions: RegionsLookup | None = None
) -> bytes:
    """The bytes published for ``alert`` (UTF-8 JSON, Chinese kept as it is)."""
    described = audio(alert) if audio is not None else None
    variants = regions(alert) if regions is not None else None
    return json.dumps(alert_payload(alert, described, variants), ensure_ascii=False).encode()


def encode_signed(
    alert: Alert,
    signer: Signer,
    audio: AudioLookup | None = None,
    regions: RegionsLookup | None = None,
) -> bytes:
    """The signed bytes published for ``alert``: ``encode_alert``'s payload in a JWS, so the
    audio descriptors (their sha256, the regions' variants too) are covered by the signature."""
    return signer.sign(encode_alert(alert, audio, regions))

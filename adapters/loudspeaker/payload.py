"""An alert as the loudspeaker terminals get it: the v1 payload of docs/protocol.md, as bytes.

The outbox worker publishes these bytes on the cover's alert topics and the sweeper resends the
same bytes on a terminal's cmd topic, so one function decides what a terminal sees.
"""

from __future__ import annotations

import json
from typing import Any

from dispatcher.core.models import Alert
from dispatcher.core.wire import PAYLOAD_VERSION


def alert_payload(alert: Alert) -> dict[str, Any]:
    """The v1 alert payload as a JSON object."""
    return {
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
        "audio": None,
    }


def encode_alert(alert: Alert) -> bytes:
    """The bytes published for ``alert`` (UTF-8 JSON, Chinese kept as it is)."""
    return json.dumps(alert_payload(alert), ensure_ascii=False).encode()

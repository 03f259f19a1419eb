"""CAP 1.2 out: an engine alert rendered as a CAP 1.2 document other systems can consume.

Pure: the alert and what it names (the regions' names, the alerts it references) in, UTF-8
bytes out, valid against the OASIS schema (``cap_schema.validate`` checks it in the tests)
and read back by ``cap_in`` to the same request. Signing (XML-DSig) wraps these bytes later.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

from dispatcher.core.cap_schema import CAP_NS
from dispatcher.core.models import Alert, MsgType, Status

# CAP times carry an offset and no fraction (its dateTime pattern); Beijing time is what the
# offices and the national system write.
BEIJING = timezone(timedelta(hours=8))
LANGUAGE = "zh-CN"
EVENT_CODE_NAME = "GB/T 35561"
GEOCODE_NAME = "GB/T 2260"
URGENCY = "Immediate"
CERTAINTY = "Likely"
_STATUS = {Status.ACTUAL: "Actual", Status.EXERCISE: "Exercise", Status.TEST: "Test"}
_MSG_TYPE = {MsgType.ALERT: "Alert", MsgType.UPDATE: "Update", MsgType.CANCEL: "Cancel"}
# GB/T 35561 event classes → CAP category; anything else is Other.
_CATEGORY = {
    "11A": "Met",  # flood and drought
    "11B": "Met",  # meteorological
    "11C": "Geo",  # earthquake
    "11D": "Geo",  # geological
    "11E": "Met",  # marine
    "11F": "Env",  # biological
    "11G": "Fire",  # forest and grassland fire
    "12": "Safety",  # accidents
    "13": "Health",  # public health
    "14": "Security",  # social security
}
# CAP: sender and identifier contain no spaces, commas or restricted characters (< and &).
_CAP_TOKEN = re.compile(r"^[^\s,<&]+$")


def cap_time(value: datetime) -> str:
    """``2026-12-06T20:30:00+08:00``: CAP's dateTime (offset, whole seconds)."""
    return value.astimezone(BEIJING).replace(microsecond=0).isoformat()


def cap_sender(office_id: str, sender_domain: str) -> str:
    """The CAP sender of an office's alerts: ``office@domain``."""
    sender = f"{office_id}@{sender_domain}"
    if not _CAP_TOKEN.match(sender):
        raise ValueError(
            f"CAP sender {sender!r} must have no spaces, commas, '<' or '&': fix the office id "
            "or the sender domain"
        )
    return sender


def category(event_code: str | None) -> str:
    if event_code:
        for prefix in (event_code[:3], event_code[:2]):
            if prefix in _CATEGORY:
                return _CATEGORY[prefix]
    return "Other"


def to_cap_xml(
    alert: Alert,
    *,
    sender_domain: str,
    region_names: Mapping[str, str],
    referenced: Mapping[str, Alert] | None = None,
) -> bytes:
    """The alert as a CAP 1.2 document (UTF-8, with the XML declaration).

    ``region_names`` gives each area's ``areaDesc`` (the code itself where a name is missing);
    ``referenced`` holds the alerts ``alert.references`` names, for their sender and sent
    (CAP references are sender,identifier,sent triples): a missing one is a ``ValueError``.
    """
    root = ET.Element(f"{{{CAP_NS}}}alert")

    def add(parent: ET.Element, name: str, text: str | None = None) -> ET.Element:
        elem = ET.SubElement(parent, f"{{{CAP_NS}}}{name}")
        elem.text = text
        return elem

    def pair(parent: ET.Element, name: str, value_name: str, value: str) -> None:
        elem = add(parent, name)
        add(elem, "valueName", value_name)
        add(elem, "value", value)

    if not _CAP_TOKEN.match(alert.id):
        raise ValueError(f"alert id {alert.id!r} is no CAP identifier")
    add(root, "identifier", alert.id)
    add(root, "sender", cap_sender(alert.sender, sender_domain))
    add(root, "sent", cap_time(alert.sent))
    add(root, "status", _STATUS[alert.status])
    add(root, "msgType", _MSG_TYPE[alert.msg_type])
    add(root, "scope", "Public")
    if alert.references:
        triples = []
        for ref_id in alert.references:
            ref = (referenced or {}).get(ref_id)
            if ref is None:
                raise ValueError(f"referenced alert {ref_id} not given: its sender and sent")
            triples.append(f"{cap_sender(ref.sender, sender_domain)},{ref.id},{cap_time(ref.sent)}")
        add(root, "references", " ".join(triples))

    info = add(root, "info")
    add(info, "language", LANGUAGE)
    add(info, "category", category(alert.event_code))
    add(info, "event", alert.event)
    add(info, "urgency", URGENCY)
    add(info, "severity", alert.severity.cap)
    add(info, "certainty", CERTAINTY)
    if alert.event_code:
        pair(info, "eventCode", EVENT_CODE_NAME, alert.event_code)
    add(info, "expires", cap_time(alert.expires))
    add(info, "senderName", alert.sender_name)
    add(info, "headline", alert.headline)
    add(info, "description", alert.text)
    if alert.instruction:
        add(info, "instruction", alert.instruction)
    pair(info, "parameter", "warning_colour", alert.severity.value)
    pair(info, "parameter", "预警级别", alert.severity.label_zh)
    for code in alert.areas:
        area = add(info, "area")
        add(area, "areaDesc", region_names.get(code) or code)
        pair(area, "geocode", GEOCODE_NAME, code)
    ET.indent(root)  # one element a line: a refusal's line number then points somewhere
    data: bytes = ET.tostring(
        root, encoding="utf-8", xml_declaration=True, default_namespace=CAP_NS
    )
    return data

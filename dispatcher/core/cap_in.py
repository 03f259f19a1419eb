"""CAP 1.2 in: a safe, schema-valid CAP document mapped to what the engine issues.

Two steps, so each can be tested and used alone: ``parse_cap(bytes) -> CapAlert`` reads the
message (safety and schema in ``cap_schema``, then the fields: status, msgType, references,
the chosen ``info`` and its translations, severity, areas as given); ``CapAlert.to_request()``
turns it into an ``AlertRequest``, resolving the areas to region codes and running the
engine's own checks on the texts. Every refusal is a ``CapError`` naming the element and line.

Choices a sender should know (docs and the API's error texts say the same):

- status Actual/Exercise/Test map to ours; System (network housekeeping) to ``test``; a Draft
  is refused. msgType Alert/Update/Cancel map to ours; Ack and Error are refused.
- The main ``info`` is the first whose language starts with ``zh``, else the first; the other
  languages are kept in ``translations`` (the first ``info`` of each). Areas are the main
  ``info``'s.
- severity Extreme/Severe/Moderate/Minor → red/orange/yellow/blue; Unknown is refused.
- ``eventCode``: the first whose value is a GB/T 35561 code (``11B01``), whatever its
  ``valueName`` (GB/T 35965 profiles spell it differently).
- Areas: only by geocode, ``valueName`` one of ``GEOCODE_NAMES`` (case-insensitive), value a
  region code. An area given only as a polygon or circle, or only by other geocodes, is
  refused: the engine never guesses or widens an area.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime

from dispatcher.core.cap_model import CapAlert, CapArea, CapReference, CapText
from dispatcher.core.cap_schema import CAP_NS, CapDocument, CapError, read_valid_cap
from dispatcher.core.models import _EVENT_CODE, MsgType, Severity, Status, well_formed_region

__all__ = ["GEOCODE_NAMES", "CapAlert", "CapArea", "CapReference", "CapText", "parse_cap"]

# geocode valueNames that carry a GB/T 2260 region code (compared case-insensitively, spaces
# ignored): the standard's own name, common spellings, and the Chinese profile's.
GEOCODE_NAMES = frozenset({"gb/t2260", "gb2260", "gbt2260", "行政区划代码", "adcode", "area_code"})
_STATUS = {
    "Actual": Status.ACTUAL,
    "Exercise": Status.EXERCISE,
    "Test": Status.TEST,
    "System": Status.TEST,
}
_MSG_TYPE = {"Alert": MsgType.ALERT, "Update": MsgType.UPDATE, "Cancel": MsgType.CANCEL}
_N = f"{{{CAP_NS}}}"


def parse_cap(data: bytes) -> CapAlert:
    """Read CAP 1.2 bytes into a ``CapAlert``: safe parse, schema, then the fields.

    Refuses (``CapError``, with element and line): what ``cap_schema`` refuses; a Draft; an
    Ack or Error; an Update or Cancel without references; no info; severity Unknown.
    """
    return _Reader(read_valid_cap(data)).alert()


class _Reader:
    def __init__(self, doc: CapDocument) -> None:
        self.doc = doc
        self.root = doc.root

    def child(self, parent: ET.Element, name: str) -> ET.Element | None:
        return parent.find(_N + name)

    def text(self, parent: ET.Element, name: str) -> str | None:
        elem = self.child(parent, name)
        if elem is None or elem.text is None:
            return None
        return elem.text.strip() or None

    def required(self, parent: ET.Element, name: str) -> str:
        # The schema makes these present; an empty one is refused here by name.
        value = self.text(parent, name)
        if value is None:
            elem = self.child(parent, name)
            raise self.doc.error(elem if elem is not None else parent, f"<{name}> is empty")
        return value

    def where(self, parent: ET.Element, name: str) -> tuple[str, int | None]:
        elem = self.child(parent, name)
        target = elem if elem is not None else parent
        return self.doc.path(target), self.doc.line(target)

    def alert(self) -> CapAlert:
        root = self.root
        cap_status = self.required(root, "status")
        if cap_status == "Draft":
            raise self._at(root, "status", "a Draft is not issued: send it with status Actual")
        status = _STATUS[cap_status]
        cap_type = self.required(root, "msgType")
        if cap_type not in _MSG_TYPE:
            raise self._at(
                root,
                "msgType",
                f"msgType {cap_type} acknowledges or reports on another message and carries no "
                "warning to broadcast; the engine takes Alert, Update and Cancel",
            )
        msg_type = _MSG_TYPE[cap_type]
        references = self.references()
        if msg_type is not MsgType.ALERT and not references:
            raise self._at(
                root,
                "references" if self.child(root, "references") is not None else "msgType",
                f"msgType {cap_type} must name in <references> the message it replaces "
                "(sender,identifier,sent)",
            )
        infos = root.findall(_N + "info")
        if not infos:
            raise self.doc.error(
                root, "the message has no <info>: there is no warning to broadcast"
            )
        languages = [self.text(info, "language") or "en-US" for info in infos]
        main = next((i for i, lang in enumerate(languages) if lang.lower().startswith("zh")), 0)
        info = infos[main]
        translations: dict[str, CapText] = {}
        for other, lang in zip(infos, languages, strict=True):
            if other is not info and lang != languages[main]:
                translations.setdefault(lang, self.words(other))
        words = self.words(info)
        severity_text = self.required(info, "severity")
        try:
            severity = Severity.from_cap(severity_text)
        except ValueError as exc:
            raise self._at(
                info,
                "severity",
                f"severity {severity_text} has no warning colour: the engine broadcasts "
                "Extreme (red), Severe (orange), Moderate (yellow) or Minor (blue)",
            ) from exc
        return CapAlert(
            identifier=self.required(root, "identifier"),
            sender=self.required(root, "sender"),
            sent=self.time(root, "sent") or self._empty(root, "sent"),
            status=status,
            cap_status=cap_status,
            msg_type=msg_type,
            references=references,
            scope=self.required(root, "scope"),
            signed=self.doc.signed,
            language=languages[main],
            event=self.required(info, "event"),
            event_code=self.event_code(info),
            severity=severity,
            urgency=self.required(info, "urgency"),
            certainty=self.required(info, "certainty"),
            headline=words.headline,
            text=words.text,
            instruction=words.instruction,
            expires=self.time(info, "expires"),
            sender_name=self.text(info, "senderName"),
            areas=[
                self.area(area, f"{self.doc.path(info)}/area[{index}]")
                for index, area in enumerate(info.findall(_N + "area"), start=1)
            ],
            translations=translations,
            where=self.fields(info),
        )

    def _empty(self, parent: ET.Element, name: str) -> datetime:
        raise self._at(parent, name, f"<{name}> is empty")

    def _at(self, parent: ET.Element, name: str, message: str) -> CapError:
        path, line = self.where(parent, name)
        return CapError(message, element=path, line=line)

    def words(self, info: ET.Element) -> CapText:
        return CapText(
            headline=self.text(info, "headline"),
            text=self.text(info, "description"),
            instruction=self.text(info, "instruction"),
        )

    def references(self) -> list[CapReference]:
        raw = self.text(self.root, "references")
        out = []
        for triple in (raw or "").split():
            parts = triple.split(",")
            try:
                if len(parts) != 3:
                    raise ValueError("not three parts")
                sent = datetime.fromisoformat(parts[2])
                if sent.tzinfo is None:
                    raise ValueError("no offset")
            except ValueError as exc:
                raise self._at(
                    self.root,
                    "references",
                    f"reference {triple!r} is not sender,identifier,sent (sent with offset, "
                    "as 2026-12-06T20:30:00+08:00); separate references by spaces",
                ) from exc
            out.append(CapReference(sender=parts[0], identifier=parts[1], sent=sent))
        return out

    def event_code(self, info: ET.Element) -> str | None:
        for code in info.findall(_N + "eventCode"):
            value = self.text(code, "value")
            if value is not None and _EVENT_CODE.match(value):
                return value
        return None

    def time(self, parent: ET.Element, name: str) -> datetime | None:
        value = self.text(parent, name)
        if value is None:
            return None
        try:
            return datetime.fromisoformat(value)
        except ValueError as exc:  # the schema's dateTime takes 24:00:00; Python does not
            raise self._at(parent, name, f"time {value!r} cannot be read: {exc}") from exc

    def area(self, area: ET.Element, path: str) -> CapArea:
        codes: list[str] = []
        others: list[str] = []
        for geocode in area.findall(_N + "geocode"):
            name = self.text(geocode, "valueName") or ""
            value = self.text(geocode, "value") or ""
            if "".join(name.split()).casefold() not in GEOCODE_NAMES:
                others.append(name)
                continue
            try:
                codes.append(well_formed_region(value))
            except ValueError as exc:
                raise self.doc.error(
                    geocode, f"area {self.text(area, 'areaDesc')!r}: {exc}"
                ) from exc
        return CapArea(
            desc=self.text(area, "areaDesc") or "",
            codes=tuple(codes),
            other_geocodes=tuple(dict.fromkeys(others)),
            polygons=len(area.findall(_N + "polygon")),
            circles=len(area.findall(_N + "circle")),
            path=path,
            line=self.doc.line(area),
        )

    def fields(self, info: ET.Element) -> dict[str, tuple[str, int | None]]:
        areas = info.find(_N + "area")
        code = next(
            (
                c
                for c in info.findall(_N + "eventCode")
                if _EVENT_CODE.match(self.text(c, "value") or "")
            ),
            None,
        )
        return {
            "info": (self.doc.path(info), self.doc.line(info)),
            "event": self.where(info, "event"),
            "event_code": (
                (self.doc.path(code), self.doc.line(code))
                if code is not None
                else (self.doc.path(info), self.doc.line(info))
            ),
            "severity": self.where(info, "severity"),
            "headline": self.where(info, "headline"),
            "text": self.where(info, "description"),
            "instruction": self.where(info, "instruction"),
            "expires": self.where(info, "expires"),
            "areas": (
                (self.doc.path(areas), self.doc.line(areas))
                if areas is not None
                else (self.doc.path(info), self.doc.line(info))
            ),
            "status": self.where(self.root, "status"),
            "msg_type": self.where(self.root, "msgType"),
            "references": self.where(self.root, "references"),
        }

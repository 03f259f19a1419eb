"""What a CAP 1.2 message says, once read (``cap_in.parse_cap``), and the alert request it
asks for (``CapAlert.to_request``): the areas resolved to region codes and the texts run through
the engine's own checks, every refusal a ``CapError`` naming the CAP element and line.

Pure. Its own module so that the HTTP and CLI layers, the feed poller and the replay tool can
name these types without the reader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from dispatcher.core.cap_schema import CapError
from dispatcher.core.models import AlertRequest, Channel, MsgType, Severity, Status

# A CAP message without info/expires: how long the engine keeps it in force (seconds).
DEFAULT_EXPIRES_IN = 6 * 3600


@dataclass(frozen=True)
class CapReference:
    """One entry of CAP ``references``: the message this one updates or cancels."""

    sender: str
    identifier: str
    sent: datetime


@dataclass(frozen=True)
class CapText:
    """An ``info``'s words in one language."""

    headline: str | None
    text: str | None
    instruction: str | None


@dataclass(frozen=True)
class CapArea:
    """One CAP ``area`` as given; ``codes`` are its GB/T 2260 geocodes, checked for form."""

    desc: str
    codes: tuple[str, ...]
    other_geocodes: tuple[str, ...]  # valueNames the engine does not read
    polygons: int
    circles: int
    path: str
    line: int | None


@dataclass(frozen=True)
class CapAlert:
    """A CAP 1.2 message read and checked, before its areas are resolved (``to_request``)."""

    identifier: str
    sender: str
    sent: datetime
    status: Status
    cap_status: str  # as sent: System shows here, ``status`` is then ``test``
    msg_type: MsgType
    references: list[CapReference]
    scope: str
    signed: bool  # an XML-DSig Signature is attached; not verified here
    language: str
    event: str
    event_code: str | None
    severity: Severity
    urgency: str
    certainty: str
    headline: str | None
    text: str | None
    instruction: str | None
    expires: datetime | None
    sender_name: str | None
    areas: list[CapArea]
    translations: dict[str, CapText]
    # request field → (CAP element path, line): where a refusal of to_request points.
    where: dict[str, tuple[str, int | None]] = field(repr=False, default_factory=dict)

    def region_codes(self, known_region: Callable[[str], bool] | None = None) -> list[str]:
        """The areas as region codes, in order, without repeats.

        Refused: no area; an area with no GB/T 2260 geocode (polygon or circle only, or other
        geocodes only); a code ``known_region`` (e.g. the region tree) does not know.
        """
        if not self.areas:
            path, line = self.where["areas"]
            raise CapError(
                "the info has no <area>: add one per region, with a geocode of valueName "
                "GB/T 2260 (the region code)",
                element=path,
                line=line,
            )
        codes: list[str] = []
        for area in self.areas:
            if not area.codes:
                raise CapError(_no_code(area), element=area.path, line=area.line)
            for code in area.codes:
                if known_region is not None and not known_region(code):
                    raise CapError(
                        f"area {area.desc!r}: region code {code} is not in the engine's region "
                        "tree",
                        element=area.path,
                        line=area.line,
                    )
                codes.append(code)
        return list(dict.fromkeys(codes))

    def to_request(
        self,
        *,
        known_region: Callable[[str], bool] | None = None,
        references: list[str] | None = None,
        channels: list[Channel] | None = None,
        default_expires_in: int = DEFAULT_EXPIRES_IN,
    ) -> AlertRequest:
        """The ``AlertRequest`` this message asks for, checked as the JSON API checks one.

        ``references`` are the engine's alert ids of the referenced messages; by default the
        CAP identifiers (right for messages the engine itself rendered, ``cap_out``); the
        caller resolves foreign ones by (sender, identifier, sent). A missing headline is
        the event; a missing description, the headline. No ``expires``: the engine's default,
        ``default_expires_in`` seconds from now. An expired message is refused.
        """
        areas = self.region_codes(known_region)
        headline = self.headline or self.event
        body: dict[str, Any] = {
            "event": self.event,
            "event_code": self.event_code,
            "severity": self.severity,
            "headline": headline,
            "text": self.text or headline,
            "instruction": self.instruction,
            "areas": areas,
            "channels": channels or [Channel.LOUDSPEAKER],
            "status": self.status,
            "msg_type": self.msg_type,
            "references": references
            if references is not None
            else [ref.identifier for ref in self.references],
        }
        if self.expires is not None:
            body["expires"] = self.expires
        else:
            body["expires_in"] = default_expires_in
        try:
            return AlertRequest.model_validate(body)
        except ValidationError as exc:
            raise self._refusal(exc) from exc

    def _refusal(self, exc: ValidationError) -> CapError:
        details: list[dict[str, Any]] = []
        for error in exc.errors(include_url=False):
            message = error["msg"].removeprefix("Value error, ")
            name = str(error["loc"][0]) if error["loc"] else _field_in(message)
            path, line = self.where.get(name, self.where["info"])
            details.append({"field": path, "line": line, "message": message, "type": "cap"})
        first = details[0]
        more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
        return CapError(
            f"{first['message']}{more}",
            element=first["field"],
            line=first["line"],
            details=details,
        )


def _field_in(message: str) -> str:
    # A model-level message ("expires must be in the future") names the field it is about.
    for name in ("expires", "references"):
        if name in message:
            return name
    return "info"


def _no_code(area: CapArea) -> str:
    given = []
    if area.polygons:
        given.append("a polygon")
    if area.circles:
        given.append("a circle")
    if area.other_geocodes:
        given.append("geocodes " + ", ".join(area.other_geocodes))
    shape = " and ".join(given) or "a description"
    return (
        f"area {area.desc!r} is given only as {shape}; the engine does not guess the regions "
        "it covers: add a geocode with valueName GB/T 2260 and the region code as value "
        "(e.g. 350102)"
    )

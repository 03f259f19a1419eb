"""CAP 1.2 XML read safely: size limit, no DTD or entities (``defusedxml``), the OASIS schema
(``xmlschema`` with the shipped ``cap12.xsd``), and every error named by element and line.

Pure: bytes in, a ``CapDocument`` (the element tree with each element's source line) out. The
mapping to an alert is ``cap_in``; the rendering of one is ``cap_out``.

``xmlschema`` reports an error's element but no line when it is given a stdlib tree, and its
path has no positions (``/alert/info/severity``). So the tree is built here, by defusedxml's
parser with a target that notes the expat line of each start tag, and the schema is run on
that tree: an error's element leads back to its line and to a path with positions
(``/alert/info[2]/severity``), which is what a sender needs to find it.
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xmlschema
from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import DefusedXMLParser

from dispatcher.core.errors import PayloadTooLarge, ValidationFailed

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
SCHEMA_PATH = Path(__file__).with_name("cap12.xsd")
# Real warnings are a few KiB (the largest sample, signed with two languages, is 23 KiB).
MAX_CAP_BYTES = 256 * 1024
# A message with hundreds of schema errors is reported by its first ones.
MAX_ERRORS = 20
_OLD_CAP = re.compile(r"^urn:oasis:names:tc:emergency:cap:1\.[01]$")
# Elements CAP lets repeat: their paths carry a position, 1-based as in XPath.
_REPEATED = frozenset(
    {"info", "area", "eventCode", "parameter", "resource", "geocode", "polygon", "circle"}
    | {"category", "responseType", "code"}
)


class CapError(ValidationFailed, code="invalid_cap"):
    """A CAP message the engine will not take; ``element`` is its path (``/alert/info[1]/
    severity``) and ``line`` its line in the document, where known; ``details`` lists every
    problem found (``field``, ``line``, ``message``, ``type``)."""

    def __init__(
        self,
        message: str,
        *,
        element: str | None = None,
        line: int | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        where = ", ".join(
            part for part in (element, f"line {line}" if line is not None else None) if part
        )
        super().__init__(
            f"CAP {where}: {message}" if where else f"CAP: {message}",
            details=details
            or [{"field": element or "body", "line": line, "message": message, "type": "cap"}],
        )
        self.element = element
        self.line = line
        self.reason = message


class CapTooLarge(PayloadTooLarge, code="cap_too_large"):
    """A CAP document over ``MAX_CAP_BYTES`` (HTTP 413); it is not parsed at all."""


def local(tag: str) -> str:
    """``{urn:…}severity`` → ``severity``."""
    return tag.rpartition("}")[2]


def _unbrace(text: str) -> str:
    # xmlschema's reasons spell tags as {urn:oasis:…:cap:1.2}scope or cap:scope.
    return re.sub(r"\{[^}]*\}|\bcap:", "", text)


@dataclass(frozen=True)
class CapDocument:
    """A parsed CAP document: the tree, and where each element is in the source."""

    root: ET.Element
    lines: dict[ET.Element, int] = field(repr=False)
    parents: dict[ET.Element, ET.Element] = field(repr=False)

    def line(self, elem: ET.Element) -> int | None:
        return self.lines.get(elem)

    def path(self, elem: ET.Element) -> str:
        """XPath-like, with positions for CAP's repeated elements: ``/alert/info[1]/area[2]``."""
        parts = []
        node: ET.Element | None = elem
        while node is not None:
            name = local(node.tag)
            parent = self.parents.get(node)
            if parent is not None and name in _REPEATED:
                same = [child for child in parent if child.tag == node.tag]
                name = f"{name}[{same.index(node) + 1}]"
            parts.append(name)
            node = parent
        return "/" + "/".join(reversed(parts))

    def error(self, elem: ET.Element, message: str) -> CapError:
        return CapError(message, element=self.path(elem), line=self.line(elem))

    @property
    def signed(self) -> bool:
        """Whether an XML-DSig ``Signature`` is attached (it is not verified here)."""
        return self.root.find(f"{{{DSIG_NS}}}Signature") is not None


class _LineBuilder(ET.TreeBuilder):
    """A tree builder that notes the line of each start tag (read from the running expat)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[ET.Element, int] = {}
        self.expat: Any = None

    def start(self, tag: Any, attrs: dict[Any, Any], /) -> ET.Element:
        elem = super().start(tag, attrs)
        self.lines[elem] = self.expat.CurrentLineNumber
        return elem


def read_cap(data: bytes) -> CapDocument:
    """Parse CAP bytes safely into a tree with line numbers; no schema yet (``validate``).

    Refused: over ``MAX_CAP_BYTES`` (``CapTooLarge``); any DOCTYPE (so no entity, no billion
    laughs, no external reference: CAP has no DTD); not well-formed XML; a root that is not
    CAP 1.2's ``alert`` (CAP 1.0/1.1 are named as such).
    """
    if len(data) > MAX_CAP_BYTES:
        raise CapTooLarge(
            f"the CAP document is {len(data)} bytes; the limit is {MAX_CAP_BYTES} bytes "
            "(a warning is a few KiB; send attachments as resource URIs)"
        )
    builder = _LineBuilder()
    parser = DefusedXMLParser(
        target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
    builder.expat = parser.parser  # the pure-Python parser's expat object
    try:
        parser.feed(data)
        root = parser.close()
    except DTDForbidden as exc:
        raise CapError(
            f"a DOCTYPE ({exc.name!r}) is not accepted: CAP has no DTD, and entity declarations "
            "and external references are never processed (billion laughs, XXE); remove it",
            line=builder.expat.CurrentLineNumber,
        ) from exc
    except (EntitiesForbidden, ExternalReferenceForbidden) as exc:  # behind forbid_dtd; kept
        raise CapError(
            f"entities and external references are not accepted ({exc}); remove them",
            line=builder.expat.CurrentLineNumber,
        ) from exc
    except SyntaxError as exc:  # ParseError of the parser's own ElementTree module
        position = getattr(exc, "position", None)
        raise CapError(
            f"not well-formed XML: {exc}", line=position[0] if position else None
        ) from exc
    doc = CapDocument(
        root=root,
        lines=builder.lines,
        parents={child: parent for parent in root.iter() for child in parent},
    )
    namespace = root.tag[1:].partition("}")[0] if root.tag.startswith("{") else ""
    if local(root.tag) == "alert" and _OLD_CAP.match(namespace):
        version = namespace.rpartition(":")[2]
        raise doc.error(
            root,
            f"this is CAP {version} (namespace {namespace}); the engine takes CAP 1.2 "
            f"(namespace {CAP_NS}): ask the sender for CAP 1.2",
        )
    if root.tag != f"{{{CAP_NS}}}alert":
        raise doc.error(
            root,
            f"the root element is {root.tag!r}, not CAP 1.2's alert (namespace {CAP_NS})",
        )
    return doc


@functools.cache
def cap_schema() -> xmlschema.XMLSchema:
    """The OASIS CAP 1.2 schema, shipped beside this module; loaded once, on first use.

    No fallback schemas: xmlschema would otherwise bring its own XML-DSig schema, and CAP's
    ``any`` for the signature is lax, so a signature is checked by its verifier (signxml),
    not here (real signed NAADS messages have ``Id`` values XML-DSig's schema refuses). Nothing
    is loaded from outside the schema's folder."""
    return xmlschema.XMLSchema(str(SCHEMA_PATH), use_fallback=False, allow="local")


def validate(doc: CapDocument) -> None:
    """Check the document against the CAP 1.2 schema; every error is named by path and line."""
    details: list[dict[str, Any]] = []
    first: tuple[str, int | None, str] | None = None
    for error in cap_schema().iter_errors(doc.root):
        elem = error.elem
        child = getattr(error, "invalid_child", None)
        if isinstance(child, ET.Element):
            elem = child  # "unexpected child": point at the child, not its parent
        reason = _unbrace(error.reason or str(error.message))
        if isinstance(elem, ET.Element):
            path, line = doc.path(elem), doc.line(elem)
        else:
            path, line = error.path or "/alert", None
        if first is None:
            first = (path, line, reason)
        details.append({"field": path, "line": line, "message": reason, "type": "cap_schema"})
        if len(details) >= MAX_ERRORS:
            break
    if first is not None:
        path, line, reason = first
        more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
        if len(details) >= MAX_ERRORS:
            more = f" (and more: the first {MAX_ERRORS} are listed)"
        raise CapError(
            f"not valid CAP 1.2: {reason}{more}", element=path, line=line, details=details
        )


def read_valid_cap(data: bytes) -> CapDocument:
    """``read_cap`` then ``validate``: a safe, schema-valid CAP 1.2 document."""
    doc = read_cap(data)
    validate(doc)
    return doc


def is_signed(data: bytes) -> bool:
    """Whether the CAP document carries an XML-DSig ``Signature`` (presence only: verifying
    it against the office's certificate is the caller's, with ``signxml``)."""
    return read_cap(data).signed

"""CAP 1.2 over HTTP: ``POST /api/v1/cap`` imports a warning of a linked release system,
``GET /api/v1/alerts/{id}.cap`` (or ``Accept: application/cap+xml`` on the alert) serves one
as CAP, ``GET /api/v1/cap/feed`` lists the current ones as Atom.

An import is issued exactly as ``POST /api/v1/alerts`` issues the same fields for the same
caller (``alerts.issue_fields``: role, jurisdiction, Idempotency-Key, preview and approval,
audit, dispatch); a CAP Cancel as ``POST /api/v1/alerts/{id}/cancel`` (``alerts.cancel_as``).
What this module adds: the body as CAP (``core.cap_in``), its XML signature checked against
the office's certificate when one is configured (``core.cap_sign``), the CAP references
resolved to our alert ids, and deduplication by (sender, identifier, sent) through
``store.cap_index``. ``import_document`` is the import itself; the HTTP handler reads the body
and calls it, the feed poller (``http.cap_feeds``) calls it through ``import_for``, with no
HTTP request. Our CAP output is signed with the engine's key when one is configured.

The routes are added before ``alerts``'s (``setup``): ``{alert_id}`` would also match
``x.cap``, and the negotiated ``GET /api/v1/alerts/{alert_id}`` answers JSON through
``alerts.get_alert`` unless CAP is asked for.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import structlog
from aiohttp import web
from cryptography import x509
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from pydantic import ValidationError

from dispatcher.core.alert_status import alert_status
from dispatcher.core.approval import PreviewRequired
from dispatcher.core.auth import Office
from dispatcher.core.cap_in import parse_cap
from dispatcher.core.cap_model import DEFAULT_EXPIRES_IN, CapAlert, CapReference
from dispatcher.core.cap_out import cap_sender, cap_time, to_cap_xml
from dispatcher.core.cap_schema import MAX_CAP_BYTES, CapError, CapTooLarge, read_valid_cap
from dispatcher.core.cap_sign import CapSigner, describe, load_certificate, verify
from dispatcher.core.config import OfficeConfig
from dispatcher.core.errors import (
    ConfigError,
    Conflict,
    StoreUnavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from dispatcher.core.models import Alert, CancelRequest, MsgType, utcnow
from dispatcher.core.people import Role
from dispatcher.http import alerts
from dispatcher.http.principal import PERSON, require_role
from dispatcher.http.requests import (
    AUTH,
    OFFICE,
    Auth,
    accept_query,
    dumps,
    office_of,
    parse_int,
    query_choice,
    visible_alert,
)
from dispatcher.http.state import OFFICES, STORE, TREE
from dispatcher.store.cap_index import CapIndex, Claim, message_digest

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

CAP_TYPES = ("application/cap+xml", "application/xml")
CAP_MEDIA = "application/cap+xml"
ATOM_MEDIA = "application/atom+xml"
ATOM_NS = "http://www.w3.org/2005/Atom"
FEED_LIMIT = 200
# Alerts looked at for the feed: the newest this many, before visibility and expiry.
FEED_SCAN = 1000
# An alert's CAP never changes (a cancel or update is an alert of its own); a region renamed
# changes its bytes, which the ETag follows.
CAP_CACHE = "private, max-age=300"
FEED_CACHE = "private, max-age=30"
_DRY_RUN = ("1", "true", "0", "false")


class ImportLocks:
    """One lock per CAP message being imported in this process: the second of two imports
    of the same message waits for the first and is answered with its alert. Between engine
    instances the index's ``SET NX`` claim does the same (the later one gets 409)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, digest: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(digest, (asyncio.Lock(), 0))
        self._locks[digest] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[digest]
            if users == 1:
                del self._locks[digest]
            else:
                self._locks[digest] = (lock, users - 1)


class SignedDocuments:
    """The engine's signer and what it signed lately (by the unsigned document's SHA-256): an
    alert's CAP is asked for again and again (feed readers), and an ECDSA signature differs
    each time, which would change the ETag on every request."""

    SIZE = 2048

    def __init__(self, signer: CapSigner) -> None:
        self.signer = signer
        self._done: OrderedDict[str, bytes] = OrderedDict()

    def sign(self, data: bytes) -> bytes:
        digest = hashlib.sha256(data).hexdigest()
        signed = self._done.get(digest)
        if signed is None:
            signed = self._done[digest] = self.signer.sign(data)
            while len(self._done) > self.SIZE:
                self._done.popitem(last=False)
        else:
            self._done.move_to_end(digest)
        return signed


CAP_SENDER_DOMAIN = web.AppKey("cap_sender_domain", str)
IMPORT_LOCKS = web.AppKey("cap_import_locks", ImportLocks)
# Office id → the certificate its CAP must be signed with (offices with ``cap_certificate``).
CAP_CERTIFICATES = web.AppKey("cap_certificates", dict[str, x509.Certificate])
# Present when ``cap_signing_key`` and ``cap_signing_certificate`` are configured.
CAP_SIGNER = web.AppKey("cap_signer", SignedDocuments)


def setup(
    app: web.Application,
    sender_domain: str,
    *,
    offices: Iterable[OfficeConfig] = (),
    signing_key: Path | None = None,
    signing_certificate: Path | None = None,
) -> None:
    """The CAP routes and what they need; call before ``alerts.routes`` are added. Reads the
    offices' CAP certificates and the engine's signing key now: a bad file stops the start
    (``ConfigError`` naming the office or setting and the path)."""
    cap_sender("office", sender_domain)  # a domain no CAP sender can have fails at start
    app[CAP_SENDER_DOMAIN] = sender_domain
    app[IMPORT_LOCKS] = ImportLocks()
    certificates = {}
    for index, office in enumerate(offices):
        if office.cap_certificate is not None:
            certificates[office.id] = _certificate(
                office.cap_certificate, f"offices[{index}].cap_certificate", office.id
            )
    app[CAP_CERTIFICATES] = certificates
    if (signing_key is None) != (signing_certificate is None):
        raise ConfigError(
            "set both cap_signing_key and cap_signing_certificate (PEM files) to sign the "
            "engine's CAP, or neither",
            field="cap_signing_key" if signing_key is None else "cap_signing_certificate",
        )
    if signing_key is not None and signing_certificate is not None:
        try:
            signer = CapSigner.from_pem(_read(signing_key), _read(signing_certificate))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot sign CAP with {signing_key} and {signing_certificate}: {exc}",
                path=signing_key,
                field="cap_signing_key",
            ) from exc
        app[CAP_SIGNER] = SignedDocuments(signer)
    app.add_routes(routes)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc.strerror}") from exc


def _certificate(path: Path, field: str, office: str) -> x509.Certificate:
    try:
        return load_certificate(_read(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"the CAP certificate of office {office} ({path}) is unusable: {exc}; give a PEM "
            "X.509 certificate (-----BEGIN CERTIFICATE-----)",
            path=path,
            field=field,
        ) from exc


# --- CAP in ------------------------------------------------------------------------------


@routes.post("/api/v1/cap")
async def import_cap(request: web.Request) -> web.Response:
    office = require_role(request, Role.COMPOSER)
    accept_query(request, "dry_run", "preview_id")
    dry_run = query_choice(request, "dry_run", _DRY_RUN, "0") in ("1", "true")
    return await import_document(request, office, await _cap_body(request), dry_run=dry_run)


class Caller:
    """What the alerts handlers read of a request, for an import no HTTP request carries (the
    feed poller): the app, the office (as its token would have given it), no person, no
    headers (so no Idempotency-Key), no query, and where it came from (the audit's
    ``source``). ``alerts.issue_fields`` and ``alerts.cancel_as`` take a ``web.Request``; this
    has the part of one they use."""

    def __init__(self, app: web.Application, office: Office, source: str) -> None:
        self.app = app
        self.remote = source
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
        self.query: MultiDictProxy[str] = MultiDictProxy(MultiDict())
        self.match_info: dict[str, str] = {}
        self._state: dict[Any, Any] = {OFFICE: office, AUTH: Auth(office=office)}

    def get(self, key: Any, default: Any = None) -> Any:
        return self._state.get(key, default)

    def __getitem__(self, key: Any) -> Any:
        return self._state[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._state[key] = value

    def __contains__(self, key: Any) -> bool:
        return key in self._state


async def import_for(
    app: web.Application, office: Office, data: bytes, *, source: str
) -> web.Response:
    """Import ``data`` as ``office``'s machine token would through ``POST /api/v1/cap``
    (the same checks, signature, dedup, audit), with no HTTP request: the feed poller's way
    in. Refusals raise as they would there (``EbdError``)."""
    return await import_document(cast(web.Request, Caller(app, office, source)), office, data)


async def import_document(
    request: web.Request, office: Office, data: bytes, *, dry_run: bool = False
) -> web.Response:
    """The import of ``POST /api/v1/cap`` once the body is read: safe parse and schema, the
    signature when the office has a certificate, then issue, update or cancel, deduplicated."""
    certificate = request.app[CAP_CERTIFICATES].get(office.id)
    if certificate is not None:
        # After the defused parse and the schema, never before (verify's docstring).
        verify(read_valid_cap(data), data, certificate, office=office.id)
    cap = parse_cap(data)
    if dry_run:
        if cap.msg_type is MsgType.CANCEL:
            raise ValidationFailed(
                "a CAP Cancel has no preview: it is sent at once (POST without dry_run)",
                details=[{"field": "dry_run", "message": "not for a Cancel"}],
            )
        return await alerts.issue_fields(request, office, await _fields(request, cap), dry_run=True)
    index = CapIndex(request.app[STORE].redis)
    digest = message_digest(cap.sender, cap.identifier, cap.sent)
    async with request.app[IMPORT_LOCKS].hold(digest):
        claim = await index.claim(digest)
        if not claim.won:
            return await _imported_before(request, office, cap, claim)
        expires = cap.expires or utcnow() + timedelta(seconds=DEFAULT_EXPIRES_IN)
        try:
            response = await _issue(request, office, cap)
        except StoreUnavailable as exc:
            # Stored and queued, only not yet on enough replicas: it goes out, so it is on
            # record as this message's (store_alert audits it for the same reason).
            stored = exc.details.get("alert_id") if isinstance(exc.details, dict) else None
            if stored is None:
                await asyncio.shield(index.release(claim))
            else:
                await asyncio.shield(index.settle(claim, str(stored), expires))
            raise
        except BaseException:
            # Refused or failed: nothing was issued from it, so it may come again. Shielded:
            # a client gone mid-request must not leave the claim holding the message.
            await asyncio.shield(index.release(claim))
            raise
        body = json.loads(response.text or "{}")
        await index.settle(claim, str(body["id"]), expires)
    log.info(
        "cap.imported",
        alert_id=body["id"],
        cap_sender=cap.sender,
        cap_identifier=cap.identifier,
        msg_type=cap.msg_type.value,
        signed=cap.signed,
        # Verified against the office's certificate (else a signature is only seen).
        signature_verified=certificate is not None,
        signer=None if certificate is None else describe(certificate),
    )
    return _with_cap(response, body, cap)


async def _cap_body(request: web.Request) -> bytes:
    """The CAP document: 415 for another content type, 413 past ``MAX_CAP_BYTES`` (read no
    further than that)."""
    if request.content_type not in CAP_TYPES:
        raise UnsupportedMediaType(
            "send the CAP 1.2 document with 'Content-Type: application/cap+xml' (or "
            f"application/xml); got {request.content_type or 'none'!r}"
        )
    too_large = CapTooLarge(
        f"the CAP document is over {MAX_CAP_BYTES} bytes, the limit (a warning is a few KiB; "
        "send attachments as resource URIs)"
    )
    if request.content_length is not None and request.content_length > MAX_CAP_BYTES:
        raise too_large
    chunks, size = [], 0
    while chunk := await request.content.read(1 << 16):
        size += len(chunk)
        if size > MAX_CAP_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _fields(request: web.Request, cap: CapAlert) -> dict[str, Any]:
    """The fields of ``POST /api/v1/alerts`` the message stands for (an Alert or Update)."""
    tree = request.app[TREE]
    references = await _resolve(request, cap)
    alert_request = cap.to_request(known_region=tree.__contains__, references=references)
    fields = alert_request.model_dump(mode="json", exclude_none=True)
    if (preview_id := request.query.get("preview_id")) is not None:
        fields["preview_id"] = preview_id
    return fields


async def _issue(request: web.Request, office: Office, cap: CapAlert) -> web.Response:
    if cap.msg_type is not MsgType.CANCEL:
        if request.get(PERSON) is not None and "preview_id" not in request.query:
            # What issue_fields would say, with the CAP endpoint's way to preview.
            raise PreviewRequired(
                "preview the imported warning first: POST /api/v1/cap?dry_run=1 with the same "
                "document, then again with ?preview_id= the preview_id of that answer",
                details=[{"field": "preview_id", "message": "required"}],
            )
        return await alerts.issue_fields(request, office, await _fields(request, cap))
    # Every one found and visible before any is cancelled.
    originals = [await visible_alert(request, office, i) for i in await _resolve(request, cap)]
    answers = [
        await alerts.cancel_as(request, office, original, _cancel_body(cap))
        for original in originals
    ]
    if len(answers) == 1:
        return answers[0]
    # Several messages cancelled by one: the first cancel answers, naming every one.
    first = json.loads(answers[0].text or "{}")
    first["cancels"] = [json.loads(answer.text or "{}")["id"] for answer in answers]
    return web.json_response(
        first, status=answers[0].status, headers=_kept(answers[0]), dumps=dumps
    )


def _cancel_body(cap: CapAlert) -> dict[str, Any] | None:
    """The cancel's reason: the message's description (else headline) where the cancel
    endpoint takes it as one; otherwise its default text."""
    reason = cap.text or cap.headline
    if not reason:
        return None
    try:
        CancelRequest.model_validate({"reason": reason})
    except ValidationError:
        return None  # too long for a reason, or not plain text: the default text says it
    return {"reason": reason}


async def _resolve(request: web.Request, cap: CapAlert) -> list[str]:
    """Our alert ids of the messages ``cap`` references: imported ones through the index,
    our own CAP output by its identifier (our alert id) and sender (``office@domain``).
    One that is neither is refused, named by its triple."""
    index = CapIndex(request.app[STORE].redis)
    ids = []
    for ref in cap.references:
        alert_id = await index.alert_of(ref.sender, ref.identifier, ref.sent)
        if alert_id is None:
            alert_id = await _our_own(request, ref)
        if alert_id is None:
            path, line = cap.where["references"]
            raise CapError(
                f"reference {ref.sender},{ref.identifier},{ref.sent.isoformat()} names no message "
                "this engine imported or issued: import the message it refers to first "
                f"(POST /api/v1/cap), or name our CAP (sender office@"
                f"{request.app[CAP_SENDER_DOMAIN]}, identifier the alert id, its sent)",
                element=path,
                line=line,
            )
        ids.append(alert_id)
    return list(dict.fromkeys(ids))


async def _our_own(request: web.Request, ref: CapReference) -> str | None:
    office_id, _, domain = ref.sender.rpartition("@")
    if domain != request.app[CAP_SENDER_DOMAIN] or len(ref.identifier) > 80:
        return None
    alert = await request.app[STORE].get_alert(ref.identifier)
    if alert is None or alert.sender != office_id or cap_time(alert.sent) != cap_time(ref.sent):
        return None
    return alert.id


async def _imported_before(
    request: web.Request, office: Office, cap: CapAlert, claim: Claim
) -> web.Response:
    """The message came before: 200 with what was made of it (nothing is issued again)."""
    triple = f"{cap.sender},{cap.identifier},{cap_time(cap.sent)}"
    if claim.pending:
        raise Conflict(
            f"CAP message {triple} is being imported right now (by another engine instance); "
            "retry in a few seconds to get its alert"
        )
    assert claim.alert_id is not None  # noqa: S101  not pending: the claim names the alert
    store, tree = request.app[STORE], request.app[TREE]
    alert = await store.get_alert(claim.alert_id)
    if alert is not None:
        if not request.app[OFFICES].can_see(office, alert.areas):
            raise Conflict(
                f"CAP message {triple} was already imported, by an office whose alert this "
                "office cannot see; nothing was issued again"
            )
        body = alerts.alert_json(alert, tree)
        body["dispatch"] = {"state": alert_status(alert, await store.dispatch_state(alert.id))}
    else:
        submission = await store.approvals.get(claim.alert_id)
        if submission is None or submission.office_id != office.id:
            raise Conflict(
                f"CAP message {triple} was already imported as {claim.alert_id}, which is no "
                "longer held; nothing was issued again"
            )
        body = alerts.submission_json(submission, tree)
    log.info("cap.duplicate", alert_id=claim.alert_id, cap_sender=cap.sender)
    body["cap"] = _cap_of(cap) | {"duplicate": True}
    return web.json_response(
        body, status=200, headers={"Location": f"/api/v1/alerts/{claim.alert_id}"}, dumps=dumps
    )


def _cap_of(cap: CapAlert) -> dict[str, Any]:
    return {"identifier": cap.identifier, "sender": cap.sender, "sent": cap.sent.isoformat()}


def _kept(response: web.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k in ("Location", "Idempotent-Replayed")}


def _with_cap(response: web.Response, body: dict[str, Any], cap: CapAlert) -> web.Response:
    """``response`` (of the alerts handlers) with the CAP message it was made from."""
    body["cap"] = _cap_of(cap)
    return web.json_response(body, status=response.status, headers=_kept(response), dumps=dumps)


# --- CAP out -----------------------------------------------------------------------------


def wants_cap(request: web.Request) -> bool:
    """Whether ``Accept`` prefers CAP XML to JSON (by q-value; ties go to JSON)."""
    weights: dict[str, float] = {}
    for part in request.headers.get("Accept", "").split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        weights[media.lower()] = max(q, weights.get(media.lower(), 0.0))
    cap = max(weights.get(media, 0.0) for media in CAP_TYPES)
    json_q = max(weights.get(m, 0.0) for m in ("application/json", "application/*", "*/*"))
    return cap > 0 and cap > json_q


@routes.get("/api/v1/alerts/{alert_id}.cap")
async def alert_cap(request: web.Request) -> web.StreamResponse:
    office = office_of(request)
    accept_query(request)
    return await _cap_answer(request, await visible_alert(request, office))


@routes.get("/api/v1/alerts/{alert_id}")
async def alert_negotiated(request: web.Request) -> web.StreamResponse:
    """The alert as JSON (``alerts.get_alert``), or as CAP when ``Accept`` asks for it."""
    if not wants_cap(request):
        return await alerts.get_alert(request)
    office = office_of(request)
    accept_query(request, "detail", "villages")  # the JSON's; nothing to CAP
    response = await _cap_answer(request, await visible_alert(request, office))
    response.headers["Vary"] = "Accept, Authorization"
    return response


async def cap_document(request: web.Request, alert: Alert) -> bytes:
    """The alert as a CAP 1.2 document: regions named from the tree, references by the
    sender and sent of the alerts they name (one no longer stored is left out)."""
    store, tree = request.app[STORE], request.app[TREE]
    referenced = {}
    for ref in alert.references:
        if (old := await store.get_alert(ref)) is not None:
            referenced[ref] = old
    if len(referenced) < len(alert.references):
        alert = alert.model_copy(update={"references": list(referenced)})
    return to_cap_xml(
        alert,
        sender_domain=request.app[CAP_SENDER_DOMAIN],
        region_names={code: tree.name(code) for code in alert.areas if code in tree},
        referenced=referenced,
    )


async def signed_document(request: web.Request, alert: Alert) -> bytes:
    """``cap_document``, signed with the engine's key when one is configured."""
    data = await cap_document(request, alert)
    signer = request.app.get(CAP_SIGNER)
    return data if signer is None else signer.sign(data)


async def _cap_answer(request: web.Request, alert: Alert) -> web.Response:
    # The ETag is of the bytes sent: signed, when they are.
    data = await signed_document(request, alert)
    return _cached(request, data, CAP_MEDIA, CAP_CACHE)


def _cached(request: web.Request, data: bytes, media: str, cache: str) -> web.Response:
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": cache}
    if etag in (tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")):
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, content_type=media, charset="utf-8", headers=headers)


@routes.get("/api/v1/cap/feed")
async def cap_feed(request: web.Request) -> web.Response:
    """An Atom feed of the current alerts the office sees (not expired, cancelled or
    replaced by an update), newest first, each linking to its CAP document."""
    office = office_of(request)
    accept_query(request, "limit")
    limit = parse_int(request, "limit", FEED_LIMIT, 1, 500)
    store, offices = request.app[STORE], request.app[OFFICES]
    now = utcnow()
    current: list[Alert] = []
    for alert in await store.list_alerts(limit=FEED_SCAN):
        if len(current) >= limit:
            break
        if alert.expired(now) or alert.msg_type is MsgType.CANCEL:
            continue
        if not offices.can_see(office, alert.areas):
            continue
        dispatch = await store.dispatch_state(alert.id)
        if dispatch.get("cancelled_by") or dispatch.get("superseded_by"):
            continue
        current.append(alert)
    data = _atom(request, office, current)
    return _cached(request, data, ATOM_MEDIA, FEED_CACHE)


def _atom(request: web.Request, office: Office, items: list[Alert]) -> bytes:
    base = str(request.url.origin())
    domain = request.app[CAP_SENDER_DOMAIN]
    # Unqualified names under a declared default namespace: ElementTree's default_namespace
    # option refuses the unqualified attributes (rel, href) Atom has.
    feed = ET.Element("feed", xmlns=ATOM_NS)

    def add(parent: ET.Element, name: str, text: str | None = None, **attrs: str) -> ET.Element:
        elem = ET.SubElement(parent, name, attrs)
        elem.text = text
        return elem

    add(feed, "id", f"{base}/api/v1/cap/feed")
    add(feed, "title", f"{office.name}：当前预警 (current warnings, CAP 1.2)")
    add(feed, "updated", cap_time(max((a.sent for a in items), default=utcnow())))
    add(feed, "link", rel="self", type=ATOM_MEDIA, href=f"{base}/api/v1/cap/feed")
    author = add(feed, "author")
    add(author, "name", domain)
    for alert in items:
        entry = add(feed, "entry")
        add(entry, "id", f"{base}/api/v1/alerts/{alert.id}.cap")
        add(entry, "title", alert.headline)
        add(entry, "updated", cap_time(alert.sent))
        add(entry, "published", cap_time(alert.sent))
        entry_author = add(entry, "author")
        add(entry_author, "name", alert.sender_name)
        add(entry_author, "email", cap_sender(alert.sender, domain))
        add(entry, "summary", alert.text)
        add(entry, "category", term=alert.severity.cap, label=alert.severity.label_zh)
        add(
            entry,
            "link",
            rel="alternate",
            type=CAP_MEDIA,
            href=f"{base}/api/v1/alerts/{alert.id}.cap",
        )
    ET.indent(feed)
    data: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return data

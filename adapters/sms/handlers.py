"""HTTP handlers of the SMS channel: the recipient registry, an alert's texts, the gateways'
receipt callbacks. Errors are ``EbdError``s, turned into JSON by the app's middleware."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web

from adapters.sms.channel import SmsChannel
from adapters.sms.planner import escalation_job
from adapters.sms.recipients import Person, merge_recipients, normalize_phone
from adapters.sms.store import STATES, SmsStore
from dispatcher.core.audit import AuditAction
from dispatcher.core.auth import Office
from dispatcher.core.collector import collector_paused
from dispatcher.core.errors import NotFound, ValidationFailed
from dispatcher.core.masking import mask
from dispatcher.core.people import Role
from dispatcher.http.audit import audit
from dispatcher.http.imports import Outcome, Progress
from dispatcher.http.jobs import (
    IMPORT_CHECKER,
    IMPORT_JOBS,
    accepted,
    auditor,
    read_import_body,
    wants_job,
)
from dispatcher.http.principal import require_role
from dispatcher.http.requests import (
    accept_query,
    dumps,
    office_of,
    parse_int,
    query_choice,
    visible_alert,
)
from dispatcher.http.state import OFFICES, STORE, TREE
from dispatcher.store.jobs import Job

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()
SMS_CHANNEL = web.AppKey("sms_channel", SmsChannel)

MAX_RECIPIENTS_PER_REQUEST = 100_000
# Above this many rows an import runs as a job: the CLI and the benchmarks send parts of this
# size, answered as before.
JOB_THRESHOLD = 5000
# Persons per transaction of an import.
WRITE_PART = 500


def _channel(request: web.Request) -> SmsChannel:
    channel = request.app.get(SMS_CHANNEL)
    if channel is None:
        raise NotFound("the SMS channel is not configured on this engine ([sms] gateways)")
    return channel


def _registry(request: web.Request) -> SmsStore:
    # The registry works without gateways: offices may load their contacts first.
    channel = request.app.get(SMS_CHANNEL)
    return channel.store if channel is not None else SmsStore(request.app[STORE])


def _outside(request: web.Request, office: Office) -> Any:
    tree = request.app[TREE]
    return lambda region: not (region in tree and tree.is_within(region, office.region))


@routes.post("/api/v1/recipients")
async def register_recipients(request: web.Request) -> web.Response:
    """Add or update the people to text. All rows are checked first (in worker processes when
    there are many); one bad row and nothing is stored. A person's postings outside the
    sending office's region are kept. More than ``JOB_THRESHOLD`` rows (or when the client
    asks) run as a job (``dispatcher.http.jobs``)."""
    office = require_role(request, Role.ADMIN)
    offices = request.app[OFFICES]
    raw = await read_import_body(request)
    with collector_paused():
        checked = await request.app[IMPORT_CHECKER].check("recipients", raw)
        # Tenths of a second for 100,000 rows: in a thread, the loop keeps answering.
        persons = await asyncio.to_thread(merge_recipients, checked, row_label="item")
    offices.require_within(office, sorted({p.region for x in persons for p in x.postings}))
    registration = _Registration(request, persons, rows=len(checked))
    if wants_job(request, len(checked), JOB_THRESHOLD):
        jobs = request.app[IMPORT_JOBS]
        job = await jobs.start(
            "recipients", office=office.id, total=len(persons), work=registration.run
        )
        return accepted(job)
    return web.json_response(await registration.write(None))


class _Registration:
    """The writes of one recipient import, in the request or in a job after it answered."""

    def __init__(self, request: web.Request, persons: list[Person], *, rows: int) -> None:
        self.persons = persons
        self.rows = rows
        self.registry = _registry(request)
        self.keep = _outside(request, office_of(request))
        self.record = auditor(request)

    async def run(self, job: Job, progress: Progress) -> Outcome:
        with collector_paused():
            return await self.write(progress), False

    async def write(self, progress: Progress | None) -> dict[str, Any]:
        persons = self.persons
        tally = {"created": 0, "updated": 0, "unchanged": 0}
        # Each part is its own transaction, a few milliseconds of the loop and of Redis; the
        # rows were all checked before, so only an outage stops it midway, and importing the
        # same rows again finishes it (the parts written come back unchanged).
        for start in range(0, len(persons), WRITE_PART):
            part = persons[start : start + WRITE_PART]
            written = await self.registry.register_persons(
                [(p.key, p.to_dict()) for p in part], keep=self.keep
            )
            for name in tally:
                tally[name] += written[name]
            if progress is not None:
                await progress(start + len(part))
        log.info("recipients.registered", persons=len(persons), **tally)
        # Phones go in masked (the audit record masks every phone number it is given).
        await self.record(
            AuditAction.RECIPIENT_IMPORT,
            persons[0].phone if len(persons) == 1 else f"{len(persons)} recipients",
            {
                "phones": [p.phone for p in persons],
                "regions": sorted({x.region for p in persons for x in p.postings}),
                **tally,
            },
        )
        return {"persons": len(persons), **tally}


@routes.get("/api/v1/recipients")
async def list_recipients(request: web.Request) -> web.Response:
    office = office_of(request)
    accept_query(request, "region", "role", "limit", "offset")
    tree, offices = request.app[TREE], request.app[OFFICES]
    code = request.query.get("region", office.region)
    tree.get(code)
    offices.require_within(office, [code])
    role = request.query.get("role")
    limit = parse_int(request, "limit", 100, 1, 5000)
    offset = parse_int(request, "offset", 0, 0, 10_000_000)
    persons = [Person.from_json(raw) for raw in await _registry(request).persons_below([code])]
    rows = []
    for person in sorted(persons, key=lambda p: p.phone):
        postings = [
            {"region": p.region, "role": p.role.value, "region_name": tree.name(p.region)}
            for p in person.postings
            if p.region in tree
            and tree.is_within(p.region, code)
            and (role is None or p.role.value == role)
        ]
        if postings:
            rows.append(
                {
                    "phone": person.phone,
                    "name": person.name,
                    "languages": person.languages,
                    "needs": person.needs,
                    "postings": postings,
                }
            )
    return web.json_response(
        {"region": code, "total": len(rows), "recipients": rows[offset : offset + limit]},
        dumps=dumps,
    )


@routes.delete("/api/v1/recipients/{phone}")
async def remove_recipient(request: web.Request) -> web.Response:
    """Remove a person's postings inside the office's region (the person, when none is left)."""
    office = require_role(request, Role.ADMIN)
    try:
        phone = normalize_phone(request.match_info["phone"])
    except ValueError as exc:
        raise ValidationFailed(str(exc), details=[{"field": "phone", "message": str(exc)}]) from exc
    person = Person(phone=phone, name="", languages=["zh"])
    removed = await _registry(request).remove_postings(person.key, _outside(request, office))
    if removed is None:
        raise NotFound("no recipient with that phone number")
    await audit(request, AuditAction.RECIPIENT_DELETE, phone, {"removed_postings": removed})
    return web.json_response({"removed_postings": removed})


@routes.get("/api/v1/alerts/{alert_id}/sms")
async def alert_sms(request: web.Request) -> web.Response:
    """Every text of an alert: to whom, in which state, after how many attempts."""
    office = office_of(request)
    accept_query(request, "job", "state", "limit", "offset")
    alert = await visible_alert(request, office)
    channel = _channel(request)
    kind = query_choice(request, "job", ("alert", "escalation"), "alert")
    wanted = query_choice(request, "state", STATES)
    limit = parse_int(request, "limit", 1000, 1, 100_000)
    offset = parse_int(request, "offset", 0, 0, 10_000_000)
    job = alert.id if kind == "alert" else escalation_job(alert.id)
    rows = [r for r in await channel.recipients(job) if wanted is None or r["state"] == wanted]
    await _mask_foreign(request, office, alert.areas, rows)
    return web.json_response(
        {
            "alert_id": alert.id,
            "job": job,
            "summary": await channel.summary(alert.id),
            "total": len(rows),
            "recipients": rows[offset : offset + limit],
        },
        dumps=dumps,
    )


async def _mask_foreign(
    request: web.Request, office: Office, areas: list[str], rows: list[dict[str, Any]]
) -> None:
    """Hide the numbers of people outside the office's jurisdiction: an office that sees a
    province-wide alert reads the numbers of its own people only. A row keeps its masked
    number and its state; ``phone`` becomes None and ``outside_jurisdiction`` true."""
    tree = request.app[TREE]
    if all(code in tree and tree.is_within(code, office.region) for code in areas):
        return  # every text of the alert went to a posting inside the office's region
    own = set(await _registry(request).person_keys_below([office.region]))
    for row in rows:
        foreign = row["recipient"] not in own
        row["outside_jurisdiction"] = foreign
        if foreign:
            row["phone"] = None
            if row.get("error"):
                row["error"] = mask(str(row["error"]))


@routes.get("/api/v1/sms/gateways")
async def gateways(request: web.Request) -> web.Response:
    office_of(request)
    accept_query(request)
    channel = _channel(request)
    return web.json_response(
        {
            "gateways": [
                {
                    "name": g.name,
                    "protocol": g.settings.protocol,
                    "priority": g.settings.priority,
                    "rate": g.settings.rate,
                    "batch": channel.pool.paces[g.name].batch,
                    **channel.pool.status()[g.name],
                }
                for g in channel.pool
            ],
            "in_doubt": await channel.store.doubt_count(),
            "receipts": await channel.store.stats(),
        }
    )


@routes.post("/api/v1/sms/receipts/{gateway}")
async def receipts(request: web.Request) -> web.Response:
    """A gateway's delivery receipts; authenticated by the gateway's signature, not a token."""
    channel = _channel(request)
    body = await request.read()
    status, content_type, answer = await channel.take_receipts(
        request.match_info["gateway"], url=str(request.url), headers=request.headers, body=body
    )
    return web.Response(status=status, body=answer, content_type=content_type)

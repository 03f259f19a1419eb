"""``/api/v1/jobs/{id}``: the import jobs, and what the import handlers share to start one.

An import whose rows are checked and authorised runs as a job when it is large (above the
kind's threshold) or when the client asks (``?async=1`` or ``Prefer: respond-async``): the
answer is ``202`` with the job and ``Location: /api/v1/jobs/{id}``. Only the office that
started a job reads it (another gets 404, as for an id that does not exist); the broker
passwords a terminal import handed out come with the first read after it ended, and never
again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from dispatcher.core.audit import AuditAction
from dispatcher.core.errors import BadRequest, NotFound, PayloadTooLarge, UnsupportedMediaType
from dispatcher.core.people import Role
from dispatcher.http.imports import ImportChecker, ImportJobs
from dispatcher.http.requests import OFFICE, PERSON, accept_query, dumps, office_of
from dispatcher.http.state import STORE
from dispatcher.store.jobs import Job

routes = web.RouteTableDef()

# Filled by the composition root (dispatcher.app) once Redis and the lease are up.
IMPORT_JOBS = web.AppKey("import_jobs", ImportJobs)
IMPORT_CHECKER = web.AppKey("import_checker", ImportChecker)

# An import body may be larger than other requests (``[api] max_body_bytes``): 100,000
# recipients are about 10 MB of JSON.
MAX_IMPORT_BYTES = 32 * 1024 * 1024
_JOB_ID_CHARS = frozenset("0123456789abcdef")


async def read_import_body(request: web.Request) -> bytes:
    """The raw JSON body of an import, up to ``MAX_IMPORT_BYTES``."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"send a JSON body with 'Content-Type: application/json' "
            f"(got {request.content_type or 'none'!r})"
        )
    if request.content_length is not None and request.content_length > MAX_IMPORT_BYTES:
        raise _too_large(request.content_length)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > MAX_IMPORT_BYTES:
            raise _too_large(size)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the import body is too large: {size} bytes, more than {MAX_IMPORT_BYTES}; send the "
        "rows in parts"
    )


def wants_job(request: web.Request, rows: int, threshold: int) -> bool:
    """Whether an import of ``rows`` runs as a job: above ``threshold`` rows, or when the
    client asks for one (``?async=1``, ``Prefer: respond-async``)."""
    flag = request.query.get("async")
    if flag not in (None, "0", "1", "true", "false"):
        raise BadRequest(f"async must be 1 or 0, not {flag!r}")
    if flag in ("1", "true"):
        return True
    prefer = request.headers.get("Prefer", "")
    if any(p.strip().lower() == "respond-async" for p in prefer.split(",")):
        return True
    return rows > threshold


Audit = Callable[[AuditAction, str, Mapping[str, Any]], Awaitable[None]]


def auditor(request: web.Request) -> Audit:
    """``dispatcher.http.audit.audit`` for a job: who asked and from where, taken from the
    request now, recorded when the job's writes are done."""
    office = request.get(OFFICE) or office_of(request)
    person = request.get(PERSON)
    source = request.remote
    records = request.app[STORE].audit

    async def record(action: AuditAction, target: str, detail: Mapping[str, Any]) -> None:
        await records.record(
            office=office.id,
            person=None if person is None else person.id,
            source=source,
            action=action,
            target=target,
            detail=detail,
        )

    return record


def accepted(job: Job) -> web.Response:
    """The ``202`` answer of an import that runs as ``job``."""
    location = f"/api/v1/jobs/{job.id}"
    return web.json_response(
        job.public() | {"location": location},
        status=202,
        headers={"Location": location},
        dumps=dumps,
    )


@routes.get("/api/v1/jobs/{job_id}")
async def show_job(request: web.Request) -> web.Response:
    """An import job: its state, rows done of all, and its result or error; the passwords of
    a terminal import with the first read after it ended (by an administrator)."""
    office = office_of(request)
    accept_query(request)
    job_id = request.match_info["job_id"]
    if not (job_id.startswith("job-") and len(job_id) == 20 and set(job_id[4:]) <= _JOB_ID_CHARS):
        raise NotFound(f"no import job {job_id!r}: job ids look like job-0123456789abcdef")
    jobs = request.app[IMPORT_JOBS]
    job = await jobs.store.get(job_id)
    # Another office's job is as unknown as none: its id says nothing to a stranger.
    if job is None or job.office != office.id:
        raise NotFound(f"no import job {job_id!r} of this office (jobs are kept a week)")
    job = await jobs.interrupt_if_orphaned(job)
    answer = job.public()
    person = request.get(PERSON)
    if job.kind == "terminals" and job.state in ("done", "interrupted"):
        may_take = person is None or person.has(Role.ADMIN)
        secret = await jobs.store.take_secret(job.id) if may_take else None
        result = dict(answer["result"] or {})
        if secret is not None:
            # Imported here: the terminals' handlers import this module.
            from dispatcher.http.terminals import provisioning

            # The same fields as the synchronous answer: the accounts, the broker, the keyring.
            result |= provisioning(request, secret)
            result["credentials_note"] = "shown once, now: the engine keeps no copy"
        elif job.has_secret:
            result["credentials"] = []
            result["credentials_note"] = (
                "handed out at an earlier read of this job (or not taken within an hour); "
                "a terminal without its password needs a new one: "
                "POST /api/v1/terminals/{id}/credentials"
            )
        answer["result"] = result or None
        if secret is not None:
            # A province's credentials are tens of megabytes of JSON: rendered in a thread,
            # the loop keeps answering meanwhile.
            body = await asyncio.to_thread(dumps, answer)
            return web.Response(text=body, content_type="application/json")
    return web.json_response(answer, dumps=dumps)

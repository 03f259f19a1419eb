"""``/api/v1/terminals``: register terminals (all rows or none), list them by region, show one
(with why its acks were refused), delete them, test the link to one (ping); their broker
accounts (issued on registration, rotated, revoked) and the keyring."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Sequence
from typing import Any, Protocol

import structlog
from aiohttp import web

from dispatcher.core.audit import AuditAction
from dispatcher.core.collector import collector_paused
from dispatcher.core.errors import Conflict, NotFound
from dispatcher.core.import_rows import Checked, accept_rows, check_rows, check_shape
from dispatcher.core.models import TerminalIn
from dispatcher.core.people import Role
from dispatcher.core.regions import RegionTree
from dispatcher.core.tasks import cancel_until_done
from dispatcher.core.validation import region_problem
from dispatcher.http.audit import audit
from dispatcher.http.imports import MAX_ROWS, Outcome, Progress
from dispatcher.http.jobs import (
    IMPORT_CHECKER,
    IMPORT_JOBS,
    accepted,
    auditor,
    read_import_body,
    wants_job,
)
from dispatcher.http.principal import require_role
from dispatcher.http.requests import accept_query, dumps, office_of, parse_int
from dispatcher.http.state import (
    BROKER_FOR_TERMINALS,
    CREDENTIALS,
    KEYRING,
    OFFICES,
    STORE,
    TREE,
    Credentials,
)
from dispatcher.store.credentials import NewAccounts
from dispatcher.store.jobs import Job, JobStore
from dispatcher.store.terminals import RegistrationResult, TerminalRow

log = structlog.get_logger(__name__)

# The most terminals a request is answered for once they are written (the most a request
# could hold before import jobs, so no caller gets a 202 it does not expect); more, up to
# ``MAX_TERMINALS_PER_IMPORT``, run as a job.
MAX_TERMINALS_PER_REQUEST = 20_000
MAX_TERMINALS_PER_IMPORT = MAX_ROWS
# How long a ping waits for the terminal's ack, by default and at most (``?timeout=``).
PING_TIMEOUT = 10
MAX_PING_TIMEOUT = 60


class Pinger(Protocol):
    """Sends a link test to one terminal (``adapters.loudspeaker.ping.LinkPinger``)."""

    async def send(self, terminal_id: str, region: str, *, timeout: float) -> str:
        """Publish it; its ping id (the alert id its acks carry) once the broker took it."""
        ...


# Filled by the composition root (dispatcher.app) once the engine's MQTT link exists.
PINGER = web.AppKey("pinger", Pinger)

routes = web.RouteTableDef()


@routes.get("/api/v1/terminals")
async def list_terminals(request: web.Request) -> web.Response:
    office = office_of(request)
    accept_query(request, "region", "limit", "offset")
    tree, offices, store = request.app[TREE], request.app[OFFICES], request.app[STORE]
    code = request.query.get("region", office.region)
    tree.get(code)
    offices.require_within(office, [code])
    limit = parse_int(request, "limit", 100, 1, 5000)
    offset = parse_int(request, "offset", 0, 0, 10_000_000)
    total, items = await store.list_terminals(code, limit=limit, offset=offset)
    return web.json_response(
        {"region": code, "total": total, "offset": offset, "terminals": items}, dumps=dumps
    )


def _plain(terminal: TerminalIn) -> TerminalRow:
    return TerminalRow(terminal.id, terminal.region, terminal.kind.value)


def check_terminal_rows(
    items: Sequence[Any], tree: RegionTree, *, row_label: str, row_numbers: Sequence[int]
) -> list[Checked[TerminalRow]]:
    """Each row validated on its own (``accept_terminals`` takes it from there); any slice of
    the rows can go through it in another process."""
    return check_rows(
        items,
        TerminalIn,
        _plain,
        lambda row: region_problem(tree, row.region),
        row_label=row_label,
        row_numbers=row_numbers,
    )


def accept_terminals(
    checked: Sequence[Checked[TerminalRow]], *, row_label: str
) -> list[TerminalRow]:
    """The checked rows, once none is bad and no terminal is listed twice."""
    seen: dict[str, int] = {}  # terminal id: the row that has it

    def accept(terminal: TerminalRow, row: int) -> dict[str, Any] | None:
        if terminal.id in seen:
            return {
                "field": "id",
                "message": f"terminal {terminal.id!r} also at {row_label} {seen[terminal.id]}",
                "type": "duplicate",
            }
        seen[terminal.id] = row
        return None

    return accept_rows(checked, accept, row_label=row_label)


SHAPE = '[{"id", "region", "kind"}]'


def parse_terminals(
    items: Any,
    tree: RegionTree,
    *,
    row_label: str = "item",
    row_numbers: Sequence[int] | None = None,
    max_items: int = MAX_TERMINALS_PER_REQUEST,
) -> list[TerminalRow]:
    """Validate a whole list; every bad row is reported, and nothing is returned if one is bad."""
    items = check_shape(items, noun="terminal", shape=SHAPE, max_items=max_items)
    numbers = row_numbers if row_numbers is not None else range(len(items))
    checked = check_terminal_rows(items, tree, row_label=row_label, row_numbers=numbers)
    return accept_terminals(checked, row_label=row_label)


@routes.post("/api/v1/terminals")
async def register_terminals(request: web.Request) -> web.Response:
    """Register terminals, all rows or none: checked whole first (in worker processes when
    there are many), then written; more than ``MAX_TERMINALS_PER_REQUEST`` (or when the
    client asks) as a job (``dispatcher.http.jobs``)."""
    office = require_role(request, Role.ADMIN)
    offices, store = request.app[OFFICES], request.app[STORE]
    raw = await read_import_body(request)
    with collector_paused():
        checked = await request.app[IMPORT_CHECKER].check("terminals", raw)
        # Tens of milliseconds for 100,000 rows: in a thread, the loop keeps answering.
        terminals = await asyncio.to_thread(accept_terminals, checked, row_label="item")
    offices.require_within(office, sorted({t.region for t in terminals}))
    # Moving a terminal takes it from where it is: that region must be the office's too, or
    # one county could pull another's loudspeakers out of its alerts.
    current = await store.regions_of([t.id for t in terminals])
    offices.require_within(office, sorted({r for r in current.values() if r is not None}))
    registration = _Registration(request, terminals)
    if wants_job(request, len(terminals), MAX_TERMINALS_PER_REQUEST):
        jobs = request.app[IMPORT_JOBS]
        job = await jobs.start(
            "terminals", office=office.id, total=len(terminals), work=registration.run
        )
        return accepted(job)
    answer, passwords = await registration.write(None, None)
    if passwords is not None:
        answer |= provisioning(request, passwords)
    return web.json_response(answer, status=200, dumps=dumps)


class _Registration:
    """The writes of one terminal import: registry, audit records, broker accounts; in the
    request, or in a job after the request answered (so it takes from the request now what
    it needs later)."""

    def __init__(self, request: web.Request, terminals: list[TerminalRow]) -> None:
        self.terminals = terminals
        self.store = request.app[STORE]
        self.credentials = request.app.get(CREDENTIALS)
        self.record = auditor(request)
        self.by = office_of(request).id

    async def run(self, job: Job, progress: Progress) -> Outcome:
        with collector_paused():
            answer, passwords = await self.write(job, progress)
        return answer, passwords is not None and bool(passwords)

    async def write(
        self, job: Job | None, progress: Progress | None
    ) -> tuple[dict[str, Any], dict[str, str] | None]:
        """The counts, and the new terminals' passwords (None: no accounts are kept here)."""
        terminals = self.terminals
        ids = [t.id for t in terminals]
        prepared: asyncio.Task[NewAccounts] | None = None
        new: list[str] = []
        if self.credentials is not None:
            have = await self.credentials.has_account(ids)
            new = [i for i in ids if i not in have]
            # The new accounts' passwords are made and hashed (a second of CPU for 100,000, in
            # a thread) while the registry is written, which mostly waits for Redis.
            prepared = asyncio.create_task(self.credentials.prepare(new, by=self.by))
        try:
            result = await self.store.register_terminals(terminals, progress=progress)
            await self._audit_registration(result)
        except BaseException:
            if prepared is not None:
                await cancel_until_done(prepared)
            raise
        answer: dict[str, Any] = {
            "created": result.created,
            "updated": result.updated,
            "unchanged": result.unchanged,
        }
        if self.credentials is None or prepared is None:
            return answer, None
        keep = None
        if job is not None:
            # The passwords are stored for the job's one reader before their accounts: an
            # instance that dies after this leaves them to be read, not lost.
            keep = functools.partial(_keep_secret, job.id)
        passwords = await self.credentials.put(await prepared, keep=keep)
        if new:
            await self.record(AuditAction.CREDENTIAL_ISSUE, _target(new), {"ids": new})
        return answer, passwords

    async def _audit_registration(self, result: RegistrationResult) -> None:
        # One record per request, also for a bulk import: the ids (the first 50 of them), the
        # regions and the counts. The registry does not say which of them moved, only how many.
        terminals = self.terminals
        detail = {
            "ids": [t.id for t in terminals],
            "regions": sorted({t.region for t in terminals}),
            "created": result.created,
            "moved": result.updated,
            "unchanged": result.unchanged,
        }
        target = _target([t.id for t in terminals])
        if result.created or not result.updated:
            await self.record(AuditAction.TERMINAL_REGISTER, target, detail)
        if result.updated:
            await self.record(AuditAction.TERMINAL_MOVE, target, detail)


def _keep_secret(job_id: str, pipe: Any, passwords: dict[str, str]) -> None:
    JobStore.queue_secret(pipe, job_id, passwords)


def provisioning(request: web.Request, passwords: dict[str, str]) -> dict[str, Any]:
    """What terminals are handed with new credentials (shown once, never stored): their
    accounts, where the broker is and the CA it is verified against, and the keyring."""
    broker = request.app.get(BROKER_FOR_TERMINALS)
    return {
        "credentials": [
            {"id": terminal, "username": terminal, "password": password}
            for terminal, password in passwords.items()
        ],
        "broker": broker or {},
        "keyring": json.loads(request.app[KEYRING].to_json()),
    }


def _target(ids: list[str]) -> str:
    return ids[0] if len(ids) == 1 else f"{len(ids)} terminals"


async def _own_terminal(request: web.Request) -> tuple[str, str]:
    """The terminal of the path, registered inside the office's jurisdiction: (id, region)."""
    office = office_of(request)
    terminal_id = request.match_info["terminal_id"]
    region = (await request.app[STORE].regions_of([terminal_id]))[terminal_id]
    if region is None:
        raise NotFound(f"terminal {terminal_id!r} is not registered")
    request.app[OFFICES].require_within(office, [region])
    return terminal_id, region


def _credentials(request: web.Request) -> Credentials:
    credentials = request.app.get(CREDENTIALS)
    if credentials is None:
        raise Conflict(
            "this engine issues no broker accounts (mqtt.accounts_file is not set): the "
            "deployment manages terminal accounts on its broker"
        )
    return credentials


@routes.post("/api/v1/terminals/{terminal_id}/credentials")
async def rotate_credentials(request: web.Request) -> web.Response:
    """A new password for the terminal; the old one stops working (and its connection is cut)
    once this answers."""
    require_role(request, Role.ADMIN)
    terminal_id, _region = await _own_terminal(request)
    office = office_of(request)
    passwords = await _credentials(request).issue([terminal_id], by=office.id)
    await audit(request, AuditAction.CREDENTIAL_ISSUE, terminal_id, {"rotated": True})
    return web.json_response(provisioning(request, passwords), dumps=dumps)


@routes.delete("/api/v1/terminals/{terminal_id}/credentials")
async def revoke_credentials(request: web.Request) -> web.Response:
    require_role(request, Role.ADMIN)
    terminal_id, _region = await _own_terminal(request)
    removed = await _credentials(request).revoke([terminal_id])
    await audit(request, AuditAction.CREDENTIAL_REVOKE, terminal_id, {"had_account": bool(removed)})
    return web.json_response({"id": terminal_id, "revoked": bool(removed)}, dumps=dumps)


@routes.delete("/api/v1/terminals/{terminal_id}")
async def delete_terminal(request: web.Request) -> web.Response:
    """Unregister a terminal and revoke its broker account: it is expected for no new alert."""
    require_role(request, Role.ADMIN)
    terminal_id, region = await _own_terminal(request)
    credentials = request.app.get(CREDENTIALS)
    if credentials is not None:
        await credentials.revoke([terminal_id])
    await request.app[STORE].delete_terminal(terminal_id)
    await audit(request, AuditAction.TERMINAL_DELETE, terminal_id, {"region": region})
    return web.json_response({"id": terminal_id, "deleted": True, "region": region}, dumps=dumps)


@routes.get("/api/v1/terminals/{terminal_id}")
async def show_terminal(request: web.Request) -> web.Response:
    """One terminal: region, kind, last state, and the latest reasons its acks were refused."""
    accept_query(request)
    terminal_id, _region = await _own_terminal(request)
    found = await request.app[STORE].terminal(terminal_id)
    if found is None:  # deleted between the two reads
        raise NotFound(f"terminal {terminal_id!r} is not registered")
    return web.json_response(found, dumps=dumps)


@routes.post("/api/v1/terminals/{terminal_id}/ping")
async def ping_terminal(request: web.Request) -> web.Response:
    """A link test: a signed ``test`` message to this terminal alone, and the wait (bounded by
    ``?timeout=`` seconds, 10 by default) for its ack: the round trip, or "no answer" with the
    terminal's last known state. Nothing sounds; no alert's delivery changes."""
    accept_query(request, "timeout")
    require_role(request, Role.ADMIN)
    terminal_id, region = await _own_terminal(request)
    timeout = parse_int(request, "timeout", PING_TIMEOUT, 1, MAX_PING_TIMEOUT)
    pinger = request.app.get(PINGER)
    if pinger is None:
        raise Conflict("this engine has no MQTT link to send link tests through")
    store = request.app[STORE]
    started = time.monotonic()
    ping_id = await pinger.send(terminal_id, region, timeout=timeout)
    # Logged, not audited: a link test changes no state (AuditAction lists what does).
    log.info(
        "terminal.ping", terminal_id=terminal_id, ping_id=ping_id, office=office_of(request).id
    )
    left = max(0.1, timeout - (time.monotonic() - started))
    ack = await store.wait_ping_ack(ping_id, left)
    answer: dict[str, Any] = {"id": terminal_id, "ping_id": ping_id, "timeout": timeout}
    if ack is not None:
        rtt = round((time.monotonic() - started) * 1000, 1)
        return web.json_response(answer | {"answered": True, "rtt_ms": rtt, "ack": ack})
    known = await store.terminal(terminal_id)
    state = None if known is None else known["state"]
    last = "it never reported a state" if state is None else f"its last state is {state['state']}"
    if state is not None and state.get("at"):
        last += f" (since {state['at']})"
    message = (
        f"no answer from {terminal_id} within {timeout} s; {last}. Check its power and link, "
        "its broker account and its keyring (GET /api/v1/terminals/{id} shows refused acks)"
    )
    return web.json_response(
        answer | {"answered": False, "message": message, "state": state}, dumps=dumps
    )


@routes.get("/api/v1/keyring")
async def keyring(request: web.Request) -> web.Response:
    """The public keys terminals verify payloads with (docs/protocol.md, "Signatures")."""
    office_of(request)
    accept_query(request)
    return web.Response(text=request.app[KEYRING].to_json(), content_type="application/json")

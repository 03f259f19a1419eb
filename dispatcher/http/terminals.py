"""``/api/v1/terminals``: register terminals (all rows or none), list them by region, show one
(with why its acks were refused), delete them, test the link to one (ping); their broker
accounts (issued on registration, rotated, revoked) and the keyring."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, Protocol

import structlog
from aiohttp import web

from dispatcher.core.audit import AuditAction
from dispatcher.core.errors import Conflict, NotFound
from dispatcher.core.models import TerminalIn
from dispatcher.core.people import Role
from dispatcher.core.regions import RegionTree
from dispatcher.core.validation import parse_rows, region_problem
from dispatcher.http.audit import audit
from dispatcher.http.principal import require_role
from dispatcher.http.requests import accept_query, dumps, office_of, parse_int, read_json
from dispatcher.http.state import (
    BROKER_FOR_TERMINALS,
    CREDENTIALS,
    KEYRING,
    OFFICES,
    STORE,
    TREE,
    Credentials,
)

log = structlog.get_logger(__name__)

MAX_TERMINALS_PER_REQUEST = 20_000
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


def parse_terminals(
    items: Any,
    tree: RegionTree,
    *,
    row_label: str = "item",
    row_numbers: Sequence[int] | None = None,
) -> list[TerminalIn]:
    """Validate a whole list; every bad row is reported, and nothing is returned if one is bad."""
    seen: dict[str, int] = {}  # terminal id: the row that has it

    def accept(terminal: TerminalIn, row: int) -> dict[str, Any] | None:
        problem = region_problem(tree, terminal.region)
        if problem is not None:
            return problem
        if terminal.id in seen:
            return {
                "field": "id",
                "message": f"terminal {terminal.id!r} also at {row_label} {seen[terminal.id]}",
                "type": "duplicate",
            }
        seen[terminal.id] = row
        return None

    return parse_rows(
        items,
        TerminalIn,
        accept,
        noun="terminal",
        shape='[{"id", "region", "kind"}]',
        max_items=MAX_TERMINALS_PER_REQUEST,
        row_label=row_label,
        row_numbers=row_numbers,
    )


@routes.post("/api/v1/terminals")
async def register_terminals(request: web.Request) -> web.Response:
    office = require_role(request, Role.ADMIN)
    tree, offices, store = request.app[TREE], request.app[OFFICES], request.app[STORE]
    body = await read_json(request)
    if isinstance(body, dict) and "terminals" in body:
        body = body["terminals"]
    terminals = parse_terminals(body, tree)
    offices.require_within(office, sorted({t.region for t in terminals}))
    # Moving a terminal takes it from where it is: that region must be the office's too, or
    # one county could pull another's loudspeakers out of its alerts.
    current = await store.regions_of([t.id for t in terminals])
    offices.require_within(office, sorted({r for r in current.values() if r is not None}))
    result = await store.register_terminals(terminals)
    # One record per request, also for a bulk import: the ids (the first 50 of them), the
    # regions and the counts. The registry does not say which of them moved, only how many.
    detail = {
        "ids": [t.id for t in terminals],
        "regions": sorted({t.region for t in terminals}),
        "created": result.created,
        "moved": result.updated,
        "unchanged": result.unchanged,
    }
    target = terminals[0].id if len(terminals) == 1 else f"{len(terminals)} terminals"
    if result.created or not result.updated:
        await audit(request, AuditAction.TERMINAL_REGISTER, target, detail)
    if result.updated:
        await audit(request, AuditAction.TERMINAL_MOVE, target, detail)
    answer: dict[str, Any] = {
        "created": result.created,
        "updated": result.updated,
        "unchanged": result.unchanged,
    }
    credentials = request.app.get(CREDENTIALS)
    if credentials is not None:
        ids = [t.id for t in terminals]
        have = await credentials.has_account(ids)
        new = [i for i in ids if i not in have]
        passwords = await credentials.issue(new, by=office.id)
        if new:
            await audit(request, AuditAction.CREDENTIAL_ISSUE, _target(new), {"ids": new})
        answer |= provisioning(request, passwords)
    return web.json_response(answer, status=200, dumps=dumps)


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

"""``GET /api/v1/openapi.json``: the OpenAPI 3.1 description of the v1 API.

Request schemas, and the answers that are a model dumped whole (drills, reports, compliance),
come from the pydantic models, so the document cannot drift from validation. Every operation
is one ``_op`` call in ``spec()``: it adds what every operation answers (429 from the
authentication throttle; for those that need a token 400, 401 and 503), so adding an endpoint
is one entry. ``tests/integration/test_fuzz.py`` runs schemathesis against a real engine with
this document and fails on any 5xx, undeclared status or answer that breaks its schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from adapters.sms.handlers import MAX_RECIPIENTS_PER_REQUEST
from adapters.sms.recipients import RecipientIn
from adapters.sms.store import STATES as SMS_STATES
from dispatcher.core.audit import AuditAction
from dispatcher.core.models import Alert, AlertRequest, CancelRequest, TerminalIn
from dispatcher.core.wire import ALERT_ID_PATTERN, TERMINAL_ID_PATTERN
from dispatcher.http.alerts import _IDEMPOTENCY_KEY
from dispatcher.http.terminals import MAX_TERMINALS_PER_REQUEST
from drills.compliance import Compliance
from drills.models import FIRST_YEAR, LAST_YEAR, Drill, DrillStatus, Edit
from drills.report import DrillReport
from drills.requests import AddRequest, MoveRequest, PlanRequest, ReasonRequest

Schema = dict[str, Any]

REGION_PATTERN = r"^[0-9]{2}([0-9]{2}([0-9]{2}([0-9]{3}([0-9]{3})?)?)?)?$"
# The handler's own pattern, so the two cannot drift.
IDEMPOTENCY_KEY_PATTERN = _IDEMPOTENCY_KEY.pattern
# Ids the path may carry: at most 80 characters are looked up, longer ones are unknown (404).
_ID = {"type": "string", "minLength": 1}

_ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
            },
        }
    },
}

_ERROR_TEXT = {
    400: "Body is not valid JSON, or a query parameter is unknown, repeated or malformed",
    401: "Missing or unknown bearer token (or, for receipts, a bad gateway signature)",
    403: "Outside the office's jurisdiction; details.region_codes names the codes",
    404: "No such alert, region, drill, person or gateway",
    409: "Conflicts with stored state",
    413: "Body too large",
    415: "Body is not application/json",
    422: "Validation failed; details lists each problem",
    429: "Too many failed authentications from this address; Retry-After says when to retry",
    503: "Redis or the broker is unavailable; retry",
}


def _error(status: int) -> Schema:
    answer = _json(_ref("Error"), _ERROR_TEXT[status])
    if status == 429:
        answer["headers"] = {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}}}
    return answer


def _json(schema: Schema, description: str = "OK") -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(schema_name: str) -> Schema:
    """A reference to one of the component schemas (``_schemas``)."""
    return {"$ref": f"#/components/schemas/{schema_name}"}


def _obj(required: Mapping[str, Schema], **optional: Schema) -> Schema:
    """An object that always has the ``required`` members (more may come)."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **optional},
    }


def _list(name: str, item: Schema, **required: Schema) -> Schema:
    """A page: ``name`` holds the items, beside the ``required`` members."""
    return _obj({**required, name: {"type": "array", "items": item}})


def _body(schema: Schema, *, required: bool = True) -> Schema:
    return {
        "required": required,
        "description": "JSON of at most api.max_body_bytes (4 MiB unless configured); a "
        "larger body is answered 413",
        "content": {"application/json": {"schema": schema}},
    }


def _many(schema_name: str, most: int) -> Schema:
    """A list of 1 to ``most`` of the named component schema, all taken or none."""
    return {"type": "array", "items": _ref(schema_name), "minItems": 1, "maxItems": most}


def _path(name: str, **schema: Any) -> Schema:
    """A parameter in the path (``{name}``); a non-empty string unless ``schema`` says."""
    return {"name": name, "in": "path", "required": True, "schema": schema or _ID}


def _query(name: str, *, required: bool = False, **schema: Any) -> Schema:
    """A query parameter; a string unless ``schema`` says otherwise."""
    return {"name": name, "in": "query", "required": required, "schema": schema or _STRING}


def _int(name: str, low: int, high: int) -> Schema:
    return _query(name, type="integer", minimum=low, maximum=high)


def _enum(name: str, values: Iterable[str]) -> Schema:
    return _query(name, type="string", enum=list(values))


_STRING: Schema = {"type": "string"}
_INT: Schema = {"type": "integer"}
_REGION: Schema = {"type": "string", "pattern": REGION_PATTERN}
_TIME: Schema = {"type": "string", "format": "date-time"}
_REGION_QUERY = _query("region", **_REGION)
_FORMAT = _enum("format", ("json", "csv"))
# A CSV's header: Chinese (the default, for people) or the English column keys.
_LANG = _enum("lang", ("zh", "en"))
_YEAR = _int("year", FIRST_YEAR, LAST_YEAR)
_CSV: Schema = {"text/csv": {"schema": {"type": "string"}}}


def _page(limit: int, default: int) -> tuple[Schema, Schema]:
    """``limit`` (1 to ``limit``, default ``default``) and ``offset``, as paged lists take
    them."""
    size = _int("limit", 1, limit)
    size["description"] = f"At most this many (default {default})"
    return size, _int("offset", 0, 10_000_000)


def _op(
    summary: str,
    ok: Mapping[str, Schema],
    *,
    params: Iterable[Schema] = (),
    body: Schema | None = None,
    errors: Iterable[int] = (),
    public: bool = False,
    links: Mapping[str, Schema] | None = None,
) -> Schema:
    """One operation: its ``ok`` answers by status, and ``errors`` beside the ones every
    operation of its kind has: 429 always (the throttle looks at the address first); 400, 401
    and 503 when it needs a token; 413 and 415 when it takes a body."""
    statuses = set(errors) | {429}
    if not public:
        statuses |= {400, 401, 503}
    if body is not None:
        statuses |= {400, 413, 415}
    responses = {**ok, **{str(s): _error(s) for s in sorted(statuses)}}
    if links:
        for status, answer in ok.items():
            if status.startswith("2"):
                answer["links"] = dict(links)
    out: Schema = {"summary": summary, "responses": responses}
    if params:
        out["parameters"] = list(params)
    if body is not None:
        out["requestBody"] = body
    if public:
        out["security"] = []
    return out


def _link(operation: str, **parameters: str) -> Schema:
    return {"operationRef": operation, "parameters": parameters}


def _ptr(path: str, method: str) -> str:
    """An ``operationRef`` to the operation at ``path``."""
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


_REQUESTS: tuple[type[BaseModel], ...] = (
    AlertRequest, CancelRequest, TerminalIn, RecipientIn,
    PlanRequest, AddRequest, MoveRequest, ReasonRequest,
)  # fmt: skip
_ANSWERS: tuple[type[BaseModel], ...] = (Drill, Edit, DrillReport, Compliance)


def _schemas() -> Schema:
    """Model schemas with their nested definitions hoisted into components: requests as
    validated, answers as serialised."""
    out: Schema = {"Error": _ERROR}
    for models, mode in ((_REQUESTS, "validation"), (_ANSWERS, "serialization")):
        for model in models:
            schema = model.model_json_schema(
                ref_template="#/components/schemas/{model}",
                mode=mode,  # type: ignore[arg-type]  # mode is the Literal pydantic takes
            )
            out.update(schema.pop("$defs", {}))
            out[model.__name__] = schema
    out.update(_answers())
    drill = out["Drill"]
    # GET /api/v1/drills/{drill_id}: the drill with its edits and where its report is.
    out["DrillDetail"] = {
        **drill,
        "required": [*drill.get("required", []), "history", "report"],
        "properties": {
            **drill["properties"],
            "history": {"type": "array", "items": _ref("Edit")},
            "report": {"type": ["string", "null"]},
        },
    }
    return out


def _answers() -> Schema:
    """The answers written by hand, as the handlers build them."""
    named = {"code": _STRING, "name": _STRING}
    counts = {
        k: _INT for k in ("expected", "received", "played", "failed", "pending", "offline")
    }  # fmt: skip
    # The stored alert as the model serialises it, and what the handlers add (alert_json).
    stored = Alert.model_json_schema(
        mode="serialization", ref_template="#/components/schemas/{model}"
    )
    defs = stored.pop("$defs", {})
    del stored["additionalProperties"]
    alert = {
        **stored,
        "required": [*stored["required"], "severity_label", "area_names", "links"],
        "properties": {
            **stored["properties"],
            "severity_cap": {},
            "severity_label": _STRING,
            "area_names": {"type": "object", "additionalProperties": _STRING},
            "links": _obj({"self": _STRING, "cancel": _STRING}),
        },
    }
    return {
        **defs,
        "Alert": alert,
        "IssuedAlert": {"allOf": [_ref("Alert"), _obj({"dispatch": {"type": "object"}})]},
        "AlertWithDelivery": {
            "allOf": [
                _ref("Alert"),
                _obj(
                    {
                        "delivery": _obj(
                            {"state": _STRING},
                            **counts,
                            # Villages of the areas with no expected terminal (None before
                            # the dispatch): what the coverage cannot show; listed only
                            # with ?villages=list.
                            villages_without_terminal={"type": ["integer", "null"]},
                            villages_without_terminal_list={
                                "type": ["array", "null"],
                                "items": _obj({**named, "path": _STRING}),
                            },
                        )
                    }
                ),
            ]
        },
        "Region": _obj(
            {
                "code": _REGION,
                "name": _STRING,
                "level": {"enum": ["province", "city", "county", "township", "village"]},
                "parent": {"type": ["string", "null"]},
                "path": {"type": "array", "items": _obj(named)},
                "children": {
                    "type": "array",
                    "items": _obj(
                        {
                            **named,
                            "virtual": {"type": "boolean"},
                            "villages": _INT,
                            "terminals": _INT,
                        }
                    ),
                },
                # Of a township: its villages with no registered terminal.
                "villages_without_terminal": {"type": "array", "items": _obj(named)},
                "topic": _STRING,
                "terminals": _INT,
                # A township with no village of its own: no drill is planned or owed for it.
                "virtual": {"type": "boolean"},
                "villages": _INT,
            }
        ),
        "Terminal": _obj({"id": {"type": "string", "pattern": TERMINAL_ID_PATTERN}}),
        # What terminals are handed with new passwords (registration, rotation).
        "Provisioning": _obj(
            {
                "credentials": {
                    "type": "array",
                    "items": _obj({"id": _STRING, "username": _STRING, "password": _STRING}),
                },
                "broker": {"type": "object"},
                "keyring": {"type": "object"},
            }
        ),
    }


@cache
def spec() -> Schema:
    alert_id = _path("alert_id")
    drill_id = _path("drill_id")
    terminal_id = _path("terminal_id")
    idem = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
        "description": "A retried request with the same key and body returns the first alert",
    }
    alert_links = {
        "get": _link(_ptr("/api/v1/alerts/{alert_id}", "get"), alert_id="$response.body#/id"),
        "terminals": _link(
            _ptr("/api/v1/alerts/{alert_id}/terminals", "get"), alert_id="$response.body#/id"
        ),
        "sms": _link(_ptr("/api/v1/alerts/{alert_id}/sms", "get"), alert_id="$response.body#/id"),
        "cancel": _link(
            _ptr("/api/v1/alerts/{alert_id}/cancel", "post"), alert_id="$response.body#/id"
        ),
    }
    drill_links = {
        name: _link(_ptr(path, method), drill_id="$response.body#/id")
        for name, path, method in (
            ("get", "/api/v1/drills/{drill_id}", "get"),
            ("report", "/api/v1/drills/{drill_id}/report", "get"),
            ("move", "/api/v1/drills/{drill_id}/move", "post"),
            ("cancel", "/api/v1/drills/{drill_id}/cancel", "post"),
            ("run", "/api/v1/drills/{drill_id}/run", "post"),
        )
    }
    any_object: Schema = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ebdispatch emergency broadcast dispatch API",
            "version": "1",
            "description": "Issue, follow and cancel warnings to village loudspeaker terminals.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/alerts": {
                "post": _op(
                    "Issue an alert (or an update that references one)",
                    {"201": _json(_ref("IssuedAlert"), "Stored and queued for dispatch")},
                    params=[idem],
                    body=_body(_ref("AlertRequest")),
                    errors=(403, 404, 409, 422),
                    links=alert_links,
                ),
                "get": _op(
                    "Recent alerts that concern the office's region",
                    {"200": _json(_list("alerts", _ref("IssuedAlert"), count=_INT))},
                    params=[_int("limit", 1, 500)],
                    errors=(422,),
                ),
            },
            "/api/v1/alerts/{alert_id}": {
                "get": _op(
                    "An alert with its delivery state (expected, received, played, failed, "
                    "pending; per city, county and optionally township)",
                    {"200": _json(_ref("AlertWithDelivery"))},
                    params=[
                        alert_id,
                        _enum("detail", ("city", "county", "township")),
                        # list: also name every village of the areas with no terminal.
                        _enum("villages", ("count", "list")),
                    ],
                    errors=(403, 404, 422),
                )
            },
            "/api/v1/alerts/{alert_id}/cancel": {
                "post": _op(
                    "Cancel an alert: publishes a cancel that references it",
                    {"201": _json(_ref("IssuedAlert"), "The cancel alert")},
                    params=[alert_id, idem],
                    body=_body(_ref("CancelRequest"), required=False),
                    errors=(403, 404, 409, 422),
                )
            },
            "/api/v1/alerts/{alert_id}/terminals": {
                "get": _op(
                    "Each expected terminal of an alert with its state and resends",
                    {"200": _json(_list("terminals", any_object, alert_id=_STRING, total=_INT))},
                    params=[
                        alert_id,
                        _enum(
                            "state",
                            ("pending", "received", "played", "failed", "offline", "no_ack"),
                        ),
                        *_page(20_000, 1000),
                    ],
                    errors=(403, 404, 422),
                )
            },
            "/api/v1/alerts/{alert_id}/sms": {
                "get": _op(
                    "Each text of an alert (job=alert) or of its escalations "
                    "(job=escalation): recipient, state, segments, gateway, attempts",
                    {
                        "200": _json(
                            _list(
                                "recipients",
                                any_object,
                                alert_id=_STRING,
                                job=_STRING,  # the job's id: the alert's, or its escalations'
                                summary={},
                                total=_INT,
                            )
                        )
                    },
                    params=[
                        alert_id,
                        _enum("job", ("alert", "escalation")),
                        _enum("state", SMS_STATES),
                        *_page(100_000, 1000),
                    ],
                    errors=(403, 404, 422),
                )
            },
            "/api/v1/regions/{code}": {
                "get": _op(
                    "A region: name, level, path, children, alert topic, terminals",
                    {"200": _json(_ref("Region"))},
                    params=[_path("code", **_REGION)],
                    errors=(404, 422),
                )
            },
            "/api/v1/terminals": {
                "get": _op(
                    "Registered terminals at or below a region",
                    {
                        "200": _json(
                            _list("terminals", _ref("Terminal"), region=_REGION, total=_INT)
                        )
                    },
                    params=[_REGION_QUERY, *_page(5000, 100)],
                    errors=(403, 404, 422),
                ),
                "post": _op(
                    "Register terminals (all or nothing); new ones get broker passwords",
                    {"200": _json(_obj({"created": _INT, "updated": _INT, "unchanged": _INT}))},
                    body=_body(_many("TerminalIn", MAX_TERMINALS_PER_REQUEST)),
                    errors=(403, 404, 422),
                ),
            },
            "/api/v1/terminals/{terminal_id}": {
                "get": _op(
                    "One terminal: region, kind, last state, and the latest reasons its acks "
                    "were refused (newest first, at most 20)",
                    {
                        "200": _json(
                            _obj(
                                {
                                    "id": _STRING,
                                    "region": _REGION,
                                    "state": any_object,
                                    "rejections": {"type": "array", "items": any_object},
                                },
                                kind=_STRING,
                                registered_at=_TIME,
                            )
                        )
                    },
                    params=[_path("terminal_id")],
                    errors=(403, 404),
                ),
                "delete": _op(
                    "Unregister a terminal and revoke its broker account",
                    {
                        "200": _json(
                            _obj({"id": _STRING, "deleted": {"type": "boolean"}, "region": _REGION})
                        )
                    },
                    params=[_path("terminal_id")],
                    errors=(403, 404),
                ),
            },
            "/api/v1/terminals/{terminal_id}/ping": {
                "post": _op(
                    "Link test: a signed test message to this terminal alone, acked without "
                    "sounding; the round trip, or no answer with its last state",
                    {
                        "200": _json(
                            _obj(
                                {
                                    "id": _STRING,
                                    "ping_id": _STRING,
                                    "answered": {"type": "boolean"},
                                },
                                rtt_ms={"type": "number"},
                                ack=any_object,
                                message=_STRING,
                                state=any_object,
                                timeout=_INT,
                            )
                        )
                    },
                    params=[_path("terminal_id"), _int("timeout", 1, 60)],
                    errors=(403, 404, 409, 422),
                ),
            },
            "/api/v1/terminals/{terminal_id}/credentials": {
                "post": _op(
                    "A new broker password for the terminal (shown once); the old one stops "
                    "working",
                    {"200": _json(_ref("Provisioning"))},
                    params=[terminal_id],
                    errors=(403, 404, 409),
                ),
                "delete": _op(
                    "Revoke the terminal's broker account",
                    {"200": _json(_obj({"id": _STRING, "revoked": {"type": "boolean"}}))},
                    params=[terminal_id],
                    errors=(403, 404, 409),
                ),
            },
            "/api/v1/keyring": {
                "get": _op(
                    "The public keys terminals verify payloads with (docs/protocol.md)",
                    {"200": _json({"type": "object"})},
                )
            },
            "/api/v1/escalations": {
                "get": _op(
                    "Terminals failed after their last resend, newest first",
                    {"200": _json(_list("escalations", any_object, count=_INT))},
                    params=[
                        _query("alert_id", type="string", pattern=ALERT_ID_PATTERN),
                        _int("limit", 1, 1000),
                        # open: still unheard; resolved: the terminal played after all.
                        _enum("state", ("open", "resolved")),
                    ],
                    errors=(403, 404, 422),
                )
            },
            "/api/v1/recipients": {
                "get": _op(
                    "People to text at or below a region, with their postings there",
                    {"200": _json(_list("recipients", any_object, region=_REGION, total=_INT))},
                    params=[_REGION_QUERY, _query("role"), *_page(5000, 100)],
                    errors=(403, 404, 422),
                ),
                "post": _op(
                    "Add or update people to text (all or nothing); a person listed twice is "
                    "one person with two postings; postings outside the office's region are "
                    "kept",
                    {"200": _json(_obj({"persons": _INT}))},
                    body=_body(_many("RecipientIn", MAX_RECIPIENTS_PER_REQUEST)),
                    errors=(403, 404, 422),
                ),
            },
            "/api/v1/recipients/{phone}": {
                "delete": _op(
                    "Remove a person's postings inside the office's region",
                    {"200": _json(_obj({"removed_postings": _INT}))},
                    params=[_path("phone")],
                    errors=(404, 422),
                )
            },
            "/api/v1/sms/gateways": {
                "get": _op(
                    "The SMS gateways: priority, rate, health; messages in doubt",
                    {
                        "200": _json(
                            _list("gateways", any_object, in_doubt=_INT, receipts=any_object)
                        )
                    },
                    errors=(404,),
                )
            },
            "/api/v1/sms/receipts/{gateway}": {
                "post": _op(
                    "A gateway's delivery receipts (docs/sms-gateways.md); authenticated by "
                    "the gateway's signature, not a bearer token",
                    {"200": {"description": "Taken; the body is what the gateway expects"}},
                    params=[_path("gateway")],
                    errors=(400, 401, 404, 413, 503),
                    public=True,
                )
            },
            "/api/v1/drills/plan": {
                "post": _op(
                    "Plan the year: a drill for every township under the region (default: "
                    "the office's) that has none that year",
                    {
                        "200": _json(
                            _obj(
                                {
                                    "year": _INT,
                                    "region": _REGION,
                                    "planned": _INT,
                                    "already_planned": _INT,
                                    "first": {"type": ["string", "null"]},
                                    "last": {"type": ["string", "null"]},
                                }
                            )
                        )
                    },
                    body=_body(_ref("PlanRequest")),
                    errors=(403, 404, 422),
                )
            },
            "/api/v1/drills": {
                "get": _op(
                    "Drills by time (format=csv to export)",
                    {
                        "200": _with_csv(
                            _json(_list("drills", _ref("Drill"), region=_REGION, total=_INT))
                        )
                    },
                    params=[
                        _YEAR,
                        _REGION_QUERY,
                        _enum("status", (s.value for s in DrillStatus)),
                        _FORMAT,
                        _LANG,
                    ],
                    errors=(403, 404, 422),
                ),
                "post": _op(
                    "Add a drill for a township (checked against the plan's rules)",
                    {"201": _json(_ref("Drill"), "The drill added")},
                    body=_body(_ref("AddRequest")),
                    errors=(403, 404, 409, 422),
                    links=drill_links,
                ),
            },
            "/api/v1/drills/{drill_id}": {
                "get": _op(
                    "A drill with its history of changes",
                    {"200": _json(_ref("DrillDetail"))},
                    params=[drill_id],
                    errors=(403, 404),
                )
            },
            **{
                f"/api/v1/drills/{{drill_id}}/{edit}": {
                    "post": _op(
                        f"{edit.capitalize()} a planned drill (a reason is recorded)",
                        {"200": _json(_ref("Drill"))},
                        params=[drill_id],
                        body=_body(_ref(request)),
                        errors=(403, 404, 409, 422),
                    )
                }
                for edit, request in (("move", "MoveRequest"), ("cancel", "ReasonRequest"))
            },
            "/api/v1/drills/{drill_id}/run": {
                "post": _op(
                    "Run a planned drill now; an optional reason is recorded",
                    {"202": _json(_ref("Drill"), "Fired")},
                    params=[drill_id],
                    # The handler takes any JSON here: an object's "reason" is recorded as text
                    # (300 characters at most), anything else records "run now".
                    body=_body(
                        {"description": 'Optional; {"reason": "..."} records why'},
                        required=False,
                    ),
                    errors=(403, 404, 409),
                )
            },
            "/api/v1/drills/{drill_id}/report": {
                "get": _op(
                    "A drill's report (format=csv: one row per terminal)",
                    {"200": _with_csv(_json(_ref("DrillReport")))},
                    params=[drill_id, _FORMAT, _LANG],
                    errors=(403, 404, 422),
                )
            },
            "/api/v1/drills/compliance": {
                "get": _op(
                    "Townships with and without a passed drill in a year, rolled up",
                    {"200": _with_csv(_json(_ref("Compliance")))},
                    params=[
                        _int("year", FIRST_YEAR, LAST_YEAR) | {"required": True},
                        _REGION_QUERY,
                        _FORMAT,
                        _LANG,
                    ],
                    errors=(403, 404, 422),
                )
            },
            "/api/v1/drills/acks": {
                "get": _op(
                    "Drill acknowledgements for review",
                    {"200": _with_csv(_json(_list("acks", any_object, total=_INT)))},
                    params=[
                        _query("drill"),
                        _query("township"),
                        _query("terminal"),
                        _query("since", type="string", format="date-time"),
                        _query("until", type="string", format="date-time"),
                        _REGION_QUERY,
                        _FORMAT,
                        _LANG,
                        _int("limit", 1, 1_000_000),
                    ],
                    errors=(403, 404, 422),
                )
            },
            "/api/v1/audit": {
                "get": _op(
                    "Audit records, oldest first (province offices): who, when, from where, "
                    "what; follow `next` for the following page",
                    {
                        "200": _json(
                            _list(
                                "records",
                                _obj({"hash": _STRING}),
                                count=_INT,
                                next_after={"type": ["integer", "null"]},
                                next={"type": ["string", "null"]},
                            )
                        )
                    },
                    params=[
                        _query("since", type="string", format="date-time"),
                        _query("until", type="string", format="date-time"),
                        _query("office"),
                        _enum("action", (a.value for a in AuditAction)),
                        _int("limit", 1, 1000),
                        _int("after", 0, 2**62),
                    ],
                    errors=(403,),
                )
            },
            "/api/v1/audit/export": {
                "get": _op(
                    "The audit log, or a time range of it, as NDJSON (province offices)",
                    {
                        "200": {
                            "description": "One record a line",
                            "content": {"application/x-ndjson": {"schema": _STRING}},
                        }
                    },
                    params=[
                        _query("since", type="string", format="date-time"),
                        _query("until", type="string", format="date-time"),
                    ],
                    errors=(403,),
                )
            },
            "/api/v1/audit/verify": {
                "get": _op(
                    "Walk the audit chain: ok, or each edited, missing, relinked or truncated "
                    "record (province offices)",
                    {
                        "200": _json(
                            _obj(
                                {
                                    "ok": {"type": "boolean"},
                                    "records": _INT,
                                    "head": _obj({"seq": _INT, "hash": _STRING}),
                                    "problem_count": _INT,
                                }
                            )
                        )
                    },
                    errors=(403,),
                )
            },
            "/healthz": {
                "get": _op(
                    "Liveness",
                    {"200": _json(_obj({"status": {"const": "ok"}}))},
                    public=True,
                )
            },
            "/readyz": {
                "get": _op(
                    "Readiness: Redis and the broker reachable",
                    {
                        "200": _json(_READY),
                        "503": _json(_READY, "Not ready: the flags say which is down"),
                    },
                    public=True,
                )
            },
            "/metrics": {
                "get": _op(
                    "Prometheus metrics",
                    {
                        "200": {
                            "description": "Text exposition format",
                            "content": {"text/plain": {"schema": _STRING}},
                        }
                    },
                    public=True,
                )
            },
            "/api/v1/openapi.json": {
                "get": _op("This document", {"200": _json({"type": "object"})}, public=True)
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
    }


_READY: Schema = _obj(
    {"redis": {"type": "boolean"}, "mqtt": {"type": "boolean"}, "ready": {"type": "boolean"}}
)


def _with_csv(answer: Schema) -> Schema:
    """``answer`` that is also given as CSV (``format=csv``)."""
    answer["content"] = {**answer["content"], **_CSV}
    return answer


async def openapi_handler(request: web.Request) -> web.Response:
    return web.json_response(spec())

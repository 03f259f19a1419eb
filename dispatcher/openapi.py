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
from dispatcher.core.approval import RejectRequest, SubmissionState
from dispatcher.core.audit import AuditAction
from dispatcher.core.cap_schema import MAX_CAP_BYTES
from dispatcher.core.models import Alert, AlertRequest, CancelRequest, TerminalIn
from dispatcher.core.people import LoginIn, PasswordIn, PersonIn, Role
from dispatcher.core.warning_templates import HAZARD_IDS, TemplateEdit
from dispatcher.core.wire import ALERT_ID_PATTERN, TERMINAL_ID_PATTERN
from dispatcher.http.alerts import _DRY_RUN, _IDEMPOTENCY_KEY
from dispatcher.http.imports import MAX_ROWS as MAX_IMPORT_ROWS
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
    428: "A person sent a warning without the preview_id of its dry run (preview first)",
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
# The body of an action that takes none: nothing, or an empty object.
_NO_FIELDS: Schema = {"type": "object", "maxProperties": 0}
_SUBMISSION_STATES = [state.value for state in SubmissionState]
_INT: Schema = {"type": "integer"}
_REGION: Schema = {"type": "string", "pattern": REGION_PATTERN}
_TIME: Schema = {"type": "string", "format": "date-time"}
_REGION_QUERY = _query("region", **_REGION)
_FORMAT = _enum("format", ("json", "csv"))
# A CSV's header: Chinese (the default, for people) or the English column keys.
_LANG = _enum("lang", ("zh", "en"))
_SEVERITIES = ("red", "orange", "yellow", "blue")
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


def _more(operation: Schema, answers: Mapping[str, Schema]) -> Schema:
    """``operation`` with more ``answers``, which its links (if any) do not apply to."""
    return {**operation, "responses": {**answers, **operation["responses"]}}


def _link(operation: str, **parameters: str) -> Schema:
    return {"operationRef": operation, "parameters": parameters}


def _ptr(path: str, method: str) -> str:
    """An ``operationRef`` to the operation at ``path``."""
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


_REQUESTS: tuple[type[BaseModel], ...] = (
    AlertRequest, CancelRequest, TerminalIn, RecipientIn, TemplateEdit,
    PlanRequest, AddRequest, MoveRequest, ReasonRequest,
)  # fmt: skip
_ANSWERS: tuple[type[BaseModel], ...] = (Drill, Edit, DrillReport, Compliance)
# The accounts API's requests (dispatcher.http.people).
_REQUESTS += (PersonIn, LoginIn, PasswordIn)
# The approval API's (dispatcher.http.approvals).
_REQUESTS += (RejectRequest,)


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
    # POST /api/v1/approvals: an alert request kept as a draft.
    request = out["AlertRequest"]
    out["DraftRequest"] = {
        **request,
        "required": [*request.get("required", []), "draft"],
        "properties": {**request["properties"], "draft": {"const": True}},
    }
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
    health = _obj(
        {k: _INT for k in ("terminals", "online", "offline", "unknown", "failures")},
        last_seen={"type": ["string", "null"]},
    )
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
        "TerminalHealth": _obj(
            {
                "region": _obj({**named, "level": _STRING}),
                "path": {"type": "array", "items": _obj(named)},
                "since": _TIME,
                "days": _INT,
                "alerts_considered": _INT,
                "totals": health,
                "children": {
                    "type": "array",
                    "items": {"allOf": [_obj({**named, "level": _STRING}), health]},
                },
                "terminals_total": _INT,
                "terminals": {
                    "type": "array",
                    "items": _obj(
                        {"id": _STRING, "region": _STRING, "failures": _INT},
                        region_name=_STRING,
                        kind={"type": ["string", "null"]},
                        state={"type": ["string", "null"]},
                        last_seen={"type": ["string", "null"]},
                    ),
                },
            }
        ),
        # A warning waiting for (or decided by) an approver (dispatcher.core.approval).
        "Submission": _obj(
            {
                "id": _STRING,
                "state": {"enum": _SUBMISSION_STATES},
                "office_id": _STRING,
                "composer": {"type": ["string", "null"]},
                "severity": _STRING,
                "headline": _STRING,
                "cover": {"type": "array", "items": _STRING},
                "submitted_at": _TIME,
                "expires_at": _TIME,
                "links": {"type": "object"},
            },
            preview={"type": "object"},
            body={"type": "object"},
            reason={"type": ["string", "null"]},
        ),
        # POST /api/v1/alerts?dry_run=1 (dispatcher.core.preview.build_preview).
        "AlertPreview": _obj(
            {
                "preview_id": _STRING,
                "areas": {"type": "array", "items": _obj(named)},
                "totals": {"type": "object"},
                "regions": {"type": "array"},
                "offline_terminals": {"type": "array"},
                "reachable": {"type": "boolean"},
            },
            sms={"type": ["object", "null"]},
        ),
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
        "PersonOut": _obj(
            {
                "id": _STRING,
                "name": _STRING,
                "office_id": _STRING,
                "roles": {"type": "array", "items": {"enum": [r.value for r in Role]}},
                "disabled": {"type": "boolean"},
            },
            created_at=_STRING,
            created_by=_STRING,
            tokens={"type": "array", "items": _obj({"id": _STRING, "issued_at": _STRING})},
        ),
        **_template_answers(),
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


_PREVIEW_TOTALS = (
    "villages", "villages_without_terminal", "terminals", "terminals_offline", "recipients",
    "recipients_covering_offline", "sms_segments", "sms_messages",
)  # fmt: skip


def _template_answers() -> Schema:
    """A warning template and a preview (dispatcher.http.templates)."""
    both = _obj({"zh": _STRING, "en": _STRING})
    count = {"type": "integer", "minimum": 0}
    return {
        "WarningTemplate": _obj(
            {
                "id": _STRING,
                "hazard": {"enum": list(HAZARD_IDS)},
                "event": _STRING,
                "event_en": _STRING,
                "event_code": _STRING,
                "severity": {"enum": list(_SEVERITIES)},
                "headline": both,
                "text": both,
                "instruction": both,
                "sms_text": both,
                "expires_in": _INT,
                "edited": {"type": "boolean"},
            },
            severity_label=_STRING,
        ),
        "Preview": _obj(
            {
                "preview_id": _STRING,
                "areas": {"type": "array", "items": _obj({"code": _STRING, "name": _STRING})},
                "totals": _obj(
                    dict.fromkeys(_PREVIEW_TOTALS, count), sms_cost_yuan={"type": "number"}
                ),
                "regions": {
                    "type": "array",
                    "items": _obj(
                        {
                            "code": _STRING,
                            "name": _STRING,
                            "level": _STRING,
                            "villages": count,
                            "terminals": count,
                            "offline": count,
                            "recipients": count,
                        },
                        villages_without_terminal=count,
                    ),
                },
                "offline_terminals": {"type": "array", "items": _obj({"id": _STRING})},
                "sms": _obj(
                    {
                        "text": {"type": ["string", "null"]},
                        "segments": count,
                        "cost_per_segment_yuan": {"type": "number"},
                    },
                    for_hearing=count,
                ),
                "reachable": {"type": "boolean"},
            }
        ),
    }


@cache
def spec() -> Schema:
    alert_id = _path("alert_id")
    submission_id = _path("submission_id")
    job_id = _path("job_id")
    job = _obj(
        {
            "id": _STRING,
            "kind": _STRING,
            "state": {"enum": ["queued", "running", "done", "failed", "interrupted"]},
            "progress": _obj({"done": _INT, "total": _INT}),
        },
        created_at=_STRING,
        updated_at=_STRING,
        result={"type": "object"},
        error={"type": "object"},
    )
    job_started = _json(job, "A large import, accepted as a job (Location: /api/v1/jobs/{id})")
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
                "post": _more(
                    _op(
                        "Issue an alert (or an update that references one); with dry_run, "
                        "preview what it would reach. A person needs the composer role and "
                        "the preview_id of the dry run; an actual red or orange warning "
                        "waits for an approver (202)",
                        {"201": _json(_ref("IssuedAlert"), "Stored and queued for dispatch")},
                        params=[idem, _enum("dry_run", _DRY_RUN)],
                        body=_body(_ref("AlertRequest")),
                        errors=(403, 404, 409, 422, 428),
                        links=alert_links,
                    ),
                    {
                        "200": _json(
                            _ref("AlertPreview"),
                            "dry_run: what it would reach; nothing stored, sent or audited",
                        ),
                        "202": _json(
                            _ref("Submission"), "Kept for an approver; nothing is sent yet"
                        ),
                    },
                ),
                "get": _op(
                    "Recent alerts that concern the office's region",
                    {"200": _json(_list("alerts", _ref("IssuedAlert"), count=_INT))},
                    params=[_int("limit", 1, 500)],
                    errors=(422,),
                ),
            },
            **_cap_paths(alert_id, idem, alert_links),
            **_audio_paths(),
            "/api/v1/approvals": {
                "get": _op(
                    "Warnings submitted for approval by the office and the offices below it, "
                    "newest first",
                    {"200": _json(_list("approvals", _ref("Submission"), count=_INT))},
                    params=[_enum("state", _SUBMISSION_STATES), _int("limit", 1, 500)],
                    errors=(422,),
                ),
                "post": _op(
                    "Keep a draft warning (the alert's fields and draft: true) to submit later",
                    {"201": _json(_ref("Submission"), "The draft, with its preview")},
                    body=_body(_ref("DraftRequest")),
                    errors=(403, 404, 409, 422),
                ),
            },
            "/api/v1/approvals/{submission_id}/submit": {
                "post": _more(
                    _op(
                        "Submit a draft (only whoever saved it) with the preview_id of its "
                        "preview: 202 when it waits for an approver, else issued (201)",
                        {"201": _json(_ref("IssuedAlert"), "Issued: no approval needed")},
                        params=[submission_id],
                        body=_body(
                            {
                                "type": "object",
                                "properties": {"preview_id": {"type": "string", "minLength": 1}},
                                "additionalProperties": False,
                            },
                            required=False,
                        ),
                        errors=(403, 404, 409, 422, 428),
                    ),
                    {"202": _json(_ref("Submission"), "Waiting for an approver")},
                ),
            },
            "/api/v1/approvals/{submission_id}": {
                "get": _op(
                    "A submission with its alert body and the preview its composer saw",
                    {"200": _json(_ref("Submission"))},
                    params=[submission_id],
                    errors=(403, 404),
                )
            },
            "/api/v1/approvals/{submission_id}/approve": {
                "post": _op(
                    "Approve a pending submission (an approver of its office or one above, "
                    "not its composer): it is issued now under the composer's office",
                    {"201": _json(_ref("IssuedAlert"), "Approved, stored and queued")},
                    params=[submission_id],
                    body=_body(_NO_FIELDS, required=False),
                    errors=(403, 404, 409, 422),
                )
            },
            "/api/v1/approvals/{submission_id}/reject": {
                "post": _op(
                    "Reject a pending submission, with the reason its composer will read",
                    {"200": _json(_ref("Submission"))},
                    params=[submission_id],
                    body=_body(_ref("RejectRequest")),
                    errors=(403, 404, 409, 422),
                )
            },
            "/api/v1/alerts/{alert_id}": {
                "get": _op(
                    "An alert with its delivery state (expected, received, played, failed, "
                    "pending; per city, county and optionally township); with Accept: "
                    "application/cap+xml, the alert as CAP 1.2 (as GET .../{alert_id}.cap)",
                    {"200": _with_cap_xml(_json(_ref("AlertWithDelivery"))), "304": _NOT_MODIFIED},
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
            "/api/v1/alerts/{alert_id}/events": {
                "get": _op(
                    "The alert's delivery live (Server-Sent Events): counts (totals and per "
                    "region the caller sees) when they change, resend, escalation, done; a "
                    "heartbeat comment every 15 s",
                    {
                        "200": {
                            "description": "An event stream, ended after the done event",
                            "content": {
                                "text/event-stream": {
                                    # One server-sent event: its name and its JSON data.
                                    "schema": {
                                        "type": "object",
                                        "required": ["event", "data"],
                                        "properties": {
                                            "event": {
                                                "type": "string",
                                                "enum": ["counts", "resend", "escalation", "done"],
                                            },
                                            "data": {"type": "string"},
                                        },
                                    }
                                }
                            },
                        }
                    },
                    params=[alert_id],
                    errors=(403, 404),
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
            "/api/v1/templates": {
                "get": _op(
                    "The warning templates (9 hazards x 4 colours) as the office edited them",
                    {"200": _json(_list("templates", _ref("WarningTemplate"), count=_INT))},
                    params=[_enum("hazard", HAZARD_IDS), _enum("severity", _SEVERITIES)],
                    errors=(422,),
                )
            },
            "/api/v1/templates/{template_id}": {
                "get": _op(
                    "A template; with areas (comma-separated codes), the AlertRequest body it "
                    "gives them, ready to POST",
                    {"200": _json({"oneOf": [_ref("WarningTemplate"), _ref("AlertRequest")]})},
                    params=[_path("template_id"), _query("areas"), _enum("lang", ("zh", "en"))],
                    errors=(403, 404, 422),
                ),
                "put": _op(
                    "Edit the office's texts of a template (composer or admin)",
                    {"200": _json(_ref("WarningTemplate"), "The template as edited")},
                    params=[_path("template_id")],
                    body=_body(_ref("TemplateEdit")),
                    errors=(403, 404, 422),
                ),
                "delete": _op(
                    "Return a template to the built-in one (composer or admin)",
                    {"200": _json(_ref("WarningTemplate"), "The built-in template")},
                    params=[_path("template_id")],
                    errors=(403, 404),
                ),
            },
            "/api/v1/previews": {
                "post": _op(
                    "What an alert would reach (villages, terminals, offline terminals, SMS "
                    "recipients, segments and cost per city, county and township); nothing "
                    "is stored or sent",
                    {"200": _json(_ref("Preview"))},
                    body=_body(_ref("AlertRequest")),
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
                    {
                        "200": _json(_obj({"created": _INT, "updated": _INT, "unchanged": _INT})),
                        "202": job_started,
                    },
                    body=_body(_many("TerminalIn", MAX_IMPORT_ROWS)),
                    errors=(403, 404, 422),
                ),
            },
            "/api/v1/terminals/health": {
                "get": _op(
                    "Terminal health of a region and of each region one level down: online, "
                    "offline, never reported, last seen, failures in the recent alerts; each "
                    "terminal from a township down",
                    {"200": _json(_ref("TerminalHealth"))},
                    params=[_REGION_QUERY, _int("days", 1, 90)],
                    errors=(403, 404, 422),
                )
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
                    {"200": _json(_obj({"persons": _INT})), "202": job_started},
                    body=_body(_many("RecipientIn", MAX_RECIPIENTS_PER_REQUEST)),
                    errors=(403, 404, 422),
                ),
            },
            "/api/v1/jobs/{job_id}": {
                "get": _op(
                    "A background import: state, progress, and its result once done (new "
                    "terminals' passwords only in the first read after it ended)",
                    {"200": _json(job)},
                    params=[job_id],
                    errors=(404,),
                )
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
                        _enum(
                            "state",
                            ("received", "playing", "played", "failed", "cancelled", "no_ack"),
                        ),
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
            "/api/v1/session": {
                "post": _op(
                    "Sign in with a login id and password: sets the HttpOnly SameSite=Strict "
                    "session cookie ebd_session; csrf is the X-CSRF-Token changes made with it "
                    "send",
                    {"200": _json(_obj({"person": _ref("PersonOut"), "csrf": _STRING}))},
                    body=_body(_ref("LoginIn")),
                    errors=(401, 422, 503),
                    public=True,
                ),
                "delete": _op(
                    "Sign out: the session ends at once and the cookie is cleared",
                    {"200": _json(_obj({"signed_out": {"const": True}}))},
                    errors=(400, 403, 503),
                    public=True,
                ),
            },
            "/api/v1/me": {
                "get": _op(
                    "Who the credential is: the person (null for an office token), the office, "
                    "the roles and, for a console session, its CSRF token",
                    {
                        "200": _json(
                            _obj(
                                {
                                    "person": {"anyOf": [_ref("PersonOut"), {"type": "null"}]},
                                    "office": _obj(
                                        {
                                            "id": _STRING,
                                            "name": _STRING,
                                            "region": _STRING,
                                            "region_name": _STRING,
                                        }
                                    ),
                                    "roles": {"type": "array", "items": _STRING},
                                    "csrf": {"type": ["string", "null"]},
                                }
                            )
                        )
                    },
                    errors=(403,),
                )
            },
            "/api/v1/people": {
                "get": _op(
                    "The office's people with their API token ids (admins, the office token)",
                    {
                        "200": _json(
                            _list("people", _ref("PersonOut"), office=_STRING),
                        )
                    },
                    errors=(403,),
                ),
                "post": _op(
                    "Create a person of the caller's office (admins, the office token)",
                    {"201": _json(_obj({"person": _ref("PersonOut")}), "Created")},
                    body=_body(_ref("PersonIn")),
                    errors=(403, 409, 422),
                ),
            },
            **{
                f"/api/v1/people/{{person_id}}/{verb}": {
                    "post": _op(
                        summary,
                        {"200": _json(_obj({"person": _ref("PersonOut")}))},
                        params=[_path("person_id")],
                        body=_body(_NO_FIELDS, required=False),
                        errors=(403, 404, 409, 422),
                    )
                }
                for verb, summary in (
                    ("disable", "Disable a person: their sessions and tokens stop at once"),
                    ("enable", "Enable a disabled person again"),
                )
            },
            "/api/v1/people/{person_id}/password": {
                "post": _op(
                    "Set a password: an admin anyone's of the office, a person their own (with "
                    "current); the person's sessions end",
                    {"200": _json(_obj({"person": _ref("PersonOut")}))},
                    params=[_path("person_id")],
                    body=_body(_ref("PasswordIn")),
                    errors=(401, 403, 404, 409, 422),
                )
            },
            "/api/v1/people/{person_id}/tokens": {
                "post": _op(
                    "Issue an API token of the person (admins, or the person): shown once",
                    {
                        "201": _json(
                            _obj({"person": _STRING, "id": _STRING, "token": _STRING}), "Issued"
                        )
                    },
                    params=[_path("person_id")],
                    body=_body(_NO_FIELDS, required=False),
                    errors=(403, 404, 409, 422),
                )
            },
            "/api/v1/people/{person_id}/tokens/{token_id}": {
                "delete": _op(
                    "Revoke one of the person's API tokens: it stops working at once",
                    {"200": _json(_obj({"person": _STRING, "revoked": _STRING}))},
                    params=[_path("person_id"), _path("token_id")],
                    errors=(403, 404),
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


_CAP_XML: Schema = {"schema": {"type": "string"}}
_NOT_MODIFIED: Schema = {"description": "Not modified since the ETag given in If-None-Match"}


def _with_cap_xml(answer: Schema) -> Schema:
    """``answer`` that is also given as CAP 1.2 XML (``Accept: application/cap+xml``)."""
    answer["content"] = {**answer["content"], "application/cap+xml": _CAP_XML}
    return answer


def _cap_paths(alert_id: Schema, idem: Schema, alert_links: Mapping[str, Schema]) -> Schema:
    """CAP 1.2 in and out (``dispatcher.http.cap``)."""
    cap_body: Schema = {
        "required": True,
        "description": f"A CAP 1.2 document (UTF-8 XML, at most {MAX_CAP_BYTES} bytes: a "
        "larger one is answered 413); no DOCTYPE",
        "content": {"application/cap+xml": _CAP_XML, "application/xml": _CAP_XML},
    }
    issue = _more(
        _op(
            "Import a CAP 1.2 warning (Alert, Update or Cancel) and issue it as POST "
            "/api/v1/alerts (or POST /api/v1/alerts/{id}/cancel) would for this caller; "
            "refusals name the CAP element and line. The same message (sender, identifier, "
            "sent) imported again: 200 with the alert made from it, nothing issued again. An "
            "office with a CAP certificate must send it signed (enveloped XML-DSig over the "
            "whole document, by that certificate's key): else 422 with code cap_signature",
            {"201": _json(_ref("IssuedAlert"), "Issued; cap names the message it came from")},
            params=[idem, _enum("dry_run", _DRY_RUN), _query("preview_id")],
            body=cap_body,
            errors=(403, 404, 409, 422, 428),
            links=alert_links,
        ),
        {
            "200": _json(
                {"anyOf": [_ref("IssuedAlert"), _ref("Submission"), _ref("AlertPreview")]},
                "Imported before (the alert or submission made from it), or dry_run's preview",
            ),
            "202": _json(_ref("Submission"), "Kept for an approver; nothing is sent yet"),
        },
    )
    issue["responses"]["415"] = _json(
        _ref("Error"), "Body is not application/cap+xml or application/xml"
    )
    atom = {"application/atom+xml": {"schema": {"type": "string"}}}
    return {
        "/api/v1/cap": {"post": issue},
        "/api/v1/cap/feed": {
            "get": _op(
                "An Atom feed of the current alerts the office sees (not expired, cancelled or "
                "replaced), newest first, each entry linking to its CAP document",
                {"200": {"description": "The feed", "content": atom}, "304": _NOT_MODIFIED},
                params=[_int("limit", 1, 500)],
                errors=(422,),
            )
        },
        "/api/v1/alerts/{alert_id}.cap": {
            "get": _op(
                "The alert as a CAP 1.2 document (valid against the OASIS schema), with ETag; "
                "signed (enveloped XML-DSig, the engine's certificate in KeyInfo) when the "
                "engine has a CAP signing key",
                {
                    "200": {
                        "description": "The CAP document",
                        "content": {"application/cap+xml": _CAP_XML},
                    },
                    "304": _NOT_MODIFIED,
                },
                params=[alert_id],
                errors=(403, 404),
            )
        },
    }


def _audio_paths() -> Schema:
    """An office's own recording (``dispatcher.http.audio``). The files themselves are served
    at ``GET /audio/{sha256}.wav`` without a token, like the console's static files."""
    described = _obj(
        {
            "url": _STRING,
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "duration": {"type": "number"},
            "codec": {"enum": ["wav"]},
        }
    )
    wav: Schema = {"schema": {"type": "string", "format": "binary"}}
    upload = _op(
        "Upload a recorded announcement (PCM WAV, 8–48 kHz, mono or stereo; at most "
        "audio.max_upload_bytes, 10 MiB, and audio.max_recording_seconds, 5 minutes, unless "
        "configured); name its sha256 as an alert's recording to have the loudspeakers play it",
        {"201": _json(described, "Stored once, by its SHA-256; url serves it")},
        body={
            "required": True,
            "description": "The WAV file's bytes (audio/x-wav and audio/wave too; MP3 and "
            "Ogg are refused with 415: this engine cannot check them)",
            "content": {"audio/wav": wav, "application/octet-stream": wav},
        },
        errors=(403, 422),
    )
    upload["responses"]["415"] = _json(_ref("Error"), "Body is not audio/wav")
    upload["responses"]["413"] = _json(_ref("Error"), "Recording larger than allowed")
    listen = _op(
        "The announcement of an issued alert, to listen to: rendered now if it was not (an "
        "alert issued without a preview goes out with audio null), within audio.preview_wait; "
        "its resends carry it from then on",
        {
            "200": _json(
                _obj(
                    {
                        "alert_id": _STRING,
                        "audio": {"anyOf": [described, {"type": "null"}]},
                    }
                ),
                "audio null: not rendered in time, or this engine renders none (no espeak-ng)",
            )
        },
        params=[_path("alert_id")],
        errors=(403, 404),
    )
    return {"/api/v1/audio": {"post": upload}, "/api/v1/alerts/{alert_id}/audio": {"get": listen}}


def _with_csv(answer: Schema) -> Schema:
    """``answer`` that is also given as CSV (``format=csv``)."""
    answer["content"] = {**answer["content"], **_CSV}
    return answer


async def openapi_handler(request: web.Request) -> web.Response:
    return web.json_response(spec())

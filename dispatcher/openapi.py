"""``GET /api/v1/openapi.json``: the OpenAPI 3.1 description of the v1 API.

Request schemas come from the pydantic models, so the document cannot drift from validation.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aiohttp import web

from adapters.sms.recipients import RecipientIn
from dispatcher.core.audit import AuditAction
from dispatcher.core.models import AlertRequest, CancelRequest, TerminalIn
from drills.requests import AddRequest, MoveRequest, PlanRequest, ReasonRequest

_ERROR = {
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


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Body is not valid JSON, or a query parameter is wrong",
        401: "Missing or unknown bearer token",
        403: "Outside the office's jurisdiction; details.region_codes names the codes",
        404: "No such alert or region",
        409: "Conflicts with stored state",
        413: "Body too large",
        415: "Body is not application/json",
        422: "Validation failed; details lists each problem",
        503: "Redis or the broker is unavailable; retry",
    }
    return {str(s): _json(_ref("Error"), text[s]) for s in statuses}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(schema_name: str) -> dict[str, Any]:
    """A reference to one of the component schemas (``_schemas``)."""
    return {"$ref": f"#/components/schemas/{schema_name}"}


def _body(schema_name: str, *, many: bool = False, required: bool = True) -> dict[str, Any]:
    """A JSON request body of the named component schema, or of a list of them (``many``)."""
    schema = {"type": "array", "items": _ref(schema_name)} if many else _ref(schema_name)
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _path(name: str) -> dict[str, Any]:
    """A string parameter in the path (``{name}``)."""
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, **schema: Any) -> dict[str, Any]:
    """An optional query parameter; a string unless ``schema`` says otherwise."""
    return {"name": name, "in": "query", "schema": schema or {"type": "string"}}


# ``limit`` and ``offset``, as every paged list takes them.
_PAGE = (_query("limit", type="integer"), _query("offset", type="integer"))


def _schemas() -> dict[str, Any]:
    """Model schemas with their nested definitions hoisted into components."""
    out: dict[str, Any] = {"Error": _ERROR}
    for model in (
        AlertRequest, CancelRequest, TerminalIn, RecipientIn,
        PlanRequest, AddRequest, MoveRequest, ReasonRequest,
    ):  # fmt: skip
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


_ACK_QUERY = ("drill", "township", "terminal", "since", "until", "region", "format", "limit")


@cache
def spec() -> dict[str, Any]:
    obj = {"type": "object"}
    alert_id = _path("alert_id")
    drill_id = _path("drill_id")
    idem = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "maxLength": 128},
        "description": "A retried request with the same key and body returns the first alert",
    }
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
                "post": {
                    "summary": "Issue an alert (or an update that references one)",
                    "parameters": [idem],
                    "requestBody": _body("AlertRequest"),
                    "responses": {
                        "201": _json(obj, "Stored and queued for dispatch"),
                        **_errors(400, 401, 403, 413, 415, 422, 503),
                    },
                },
                "get": {
                    "summary": "Recent alerts that concern the office's region",
                    "parameters": [_query("limit", type="integer", maximum=500)],
                    "responses": {"200": _json(obj), **_errors(401, 422)},
                },
            },
            "/api/v1/alerts/{alert_id}": {
                "get": {
                    "summary": "An alert with its delivery state (expected, received, played, "
                    "failed, pending; per city, county and optionally township)",
                    "parameters": [alert_id, _query("detail", enum=["city", "county", "township"])],
                    "responses": {"200": _json(obj), **_errors(401, 403, 404, 422)},
                }
            },
            "/api/v1/alerts/{alert_id}/cancel": {
                "post": {
                    "summary": "Cancel an alert: publishes a cancel that references it",
                    "parameters": [alert_id, idem],
                    "requestBody": _body("CancelRequest", required=False),
                    "responses": {
                        "201": _json(obj, "The cancel alert"),
                        **_errors(401, 403, 404, 409, 415, 422),
                    },
                }
            },
            "/api/v1/regions/{code}": {
                "get": {
                    "summary": "A region: name, level, path, children, alert topic, terminals",
                    "parameters": [_path("code")],
                    "responses": {"200": _json(obj), **_errors(401, 404, 422)},
                }
            },
            "/api/v1/terminals": {
                "get": {
                    "summary": "Registered terminals at or below a region",
                    "parameters": [_query("region"), *_PAGE],
                    "responses": {"200": _json(obj), **_errors(401, 403, 422)},
                },
                "post": {
                    "summary": "Register terminals (all or nothing)",
                    "requestBody": _body("TerminalIn", many=True),
                    "responses": {"200": _json(obj), **_errors(400, 401, 403, 413, 415, 422)},
                },
            },
            "/api/v1/alerts/{alert_id}/terminals": {
                "get": {
                    "summary": "Each expected terminal of an alert with its state and resends",
                    "parameters": [alert_id, _query("state"), *_PAGE],
                    "responses": {"200": _json(obj), **_errors(401, 403, 404, 422)},
                }
            },
            "/api/v1/alerts/{alert_id}/sms": {
                "get": {
                    "summary": "Each text of an alert (job=alert) or of its escalations "
                    "(job=escalation): recipient, state, segments, gateway, attempts",
                    "parameters": [
                        alert_id,
                        _query("job", enum=["alert", "escalation"]),
                        _query("state"),
                        *_PAGE,
                    ],
                    "responses": {"200": _json(obj), **_errors(401, 403, 404, 422)},
                }
            },
            "/api/v1/escalations": {
                "get": {
                    "summary": "Terminals failed after their last resend, newest first",
                    "parameters": [_query("alert_id"), _query("limit", type="integer")],
                    "responses": {"200": _json(obj), **_errors(401, 403, 404, 422)},
                }
            },
            "/api/v1/recipients": {
                "get": {
                    "summary": "People to text at or below a region, with their postings there",
                    "parameters": [_query("region"), _query("role"), *_PAGE],
                    "responses": {"200": _json(obj), **_errors(401, 403, 422)},
                },
                "post": {
                    "summary": "Add or update people to text (all or nothing); a person listed "
                    "twice is one person with two postings; postings outside the office's "
                    "region are kept",
                    "requestBody": _body("RecipientIn", many=True),
                    "responses": {"200": _json(obj), **_errors(400, 401, 403, 413, 415, 422)},
                },
            },
            "/api/v1/recipients/{phone}": {
                "delete": {
                    "summary": "Remove a person's postings inside the office's region",
                    "parameters": [_path("phone")],
                    "responses": {"200": _json(obj), **_errors(401, 404, 422)},
                }
            },
            "/api/v1/sms/gateways": {
                "get": {
                    "summary": "The SMS gateways: priority, rate, health; messages in doubt",
                    "responses": {"200": _json(obj), **_errors(401, 404)},
                }
            },
            "/api/v1/sms/receipts/{gateway}": {
                "post": {
                    "summary": "A gateway's delivery receipts (docs/sms-gateways.md); "
                    "authenticated by the gateway's signature, not a bearer token",
                    "security": [],
                    "parameters": [_path("gateway")],
                    "responses": {
                        "200": {"description": "Taken; the body is what the gateway expects"},
                        **_errors(400, 401, 404, 503),
                    },
                }
            },
            "/api/v1/drills/plan": {
                "post": {
                    "summary": "Plan the year: a drill for every township under the region "
                    "(default: the office's) that has none that year",
                    "requestBody": _body("PlanRequest"),
                    "responses": {"200": _json(obj), **_errors(400, 401, 403, 415, 422)},
                }
            },
            "/api/v1/drills": {
                "get": {
                    "summary": "Drills by time (format=csv to export)",
                    "parameters": [_query(n) for n in ("year", "region", "status", "format")],
                    "responses": {"200": _json(obj), **_errors(401, 403, 404, 422)},
                },
                "post": {
                    "summary": "Add a drill for a township (checked against the plan's rules)",
                    "requestBody": _body("AddRequest"),
                    "responses": {"201": _json(obj), **_errors(400, 401, 403, 415, 422)},
                },
            },
            "/api/v1/drills/{drill_id}": {
                "get": {
                    "summary": "A drill with its history of changes",
                    "parameters": [drill_id],
                    "responses": {"200": _json(obj), **_errors(401, 403, 404)},
                }
            },
            "/api/v1/drills/{drill_id}/move": {
                "post": {
                    "summary": "Move a planned drill (a reason is recorded)",
                    "parameters": [drill_id],
                    "requestBody": _body("MoveRequest"),
                    "responses": {"200": _json(obj), **_errors(401, 403, 404, 409, 415, 422)},
                }
            },
            "/api/v1/drills/{drill_id}/cancel": {
                "post": {
                    "summary": "Cancel a planned drill (a reason is recorded)",
                    "parameters": [drill_id],
                    "requestBody": _body("ReasonRequest"),
                    "responses": {"200": _json(obj), **_errors(401, 403, 404, 409, 415, 422)},
                }
            },
            "/api/v1/drills/{drill_id}/run": {
                "post": {
                    "summary": "Run a planned drill now",
                    "parameters": [drill_id],
                    "responses": {"202": _json(obj), **_errors(401, 403, 404, 409)},
                }
            },
            "/api/v1/drills/{drill_id}/report": {
                "get": {
                    "summary": "A drill's report (format=csv: one row per terminal)",
                    "parameters": [drill_id],
                    "responses": {"200": _json(obj), **_errors(401, 403, 404, 422)},
                }
            },
            "/api/v1/drills/compliance": {
                "get": {
                    "summary": "Townships with and without a passed drill in a year, rolled up",
                    "parameters": [_query(n) for n in ("year", "region", "format")],
                    "responses": {"200": _json(obj), **_errors(401, 403, 404, 422)},
                }
            },
            "/api/v1/drills/acks": {
                "get": {
                    "summary": "Drill acknowledgements for review",
                    "parameters": [_query(n) for n in _ACK_QUERY],
                    "responses": {"200": _json(obj), **_errors(401, 403, 404, 422)},
                }
            },
            "/api/v1/audit": {
                "get": {
                    "summary": "Audit records, oldest first (province offices): who, when, from "
                    "where, what; follow `next` for the following page",
                    "parameters": [
                        _query("since", format="date-time"),
                        _query("until", format="date-time"),
                        _query("office"),
                        _query("action", enum=[a.value for a in AuditAction]),
                        _query("limit", type="integer", minimum=1, maximum=1000),
                        _query("after", type="integer", minimum=0),
                    ],
                    "responses": {"200": _json(obj), **_errors(400, 401, 403, 503)},
                }
            },
            "/api/v1/audit/export": {
                "get": {
                    "summary": "The audit log, or a time range of it, as NDJSON (province offices)",
                    "parameters": [
                        _query("since", format="date-time"),
                        _query("until", format="date-time"),
                    ],
                    "responses": {
                        "200": {
                            "description": "One record a line",
                            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                        },
                        **_errors(400, 401, 403, 503),
                    },
                }
            },
            "/api/v1/audit/verify": {
                "get": {
                    "summary": "Walk the audit chain: ok, or each edited, missing, relinked or "
                    "truncated record (province offices)",
                    "responses": {"200": _json(obj), **_errors(401, 403, 503)},
                }
            },
            "/healthz": {
                "get": {"summary": "Liveness", "security": [], "responses": {"200": _json(obj)}}
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: Redis and the broker reachable",
                    "security": [],
                    "responses": {"200": _json(obj), "503": _json(obj, "Not ready")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "security": [],
                    "responses": {"200": {"description": "text exposition format"}},
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": _json(obj)},
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
    }


async def openapi_handler(request: web.Request) -> web.Response:
    return web.json_response(spec())

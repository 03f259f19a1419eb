"""The OpenAPI document against the app it describes: every route documented and nothing
documented that is not a route, the statuses every operation can get, request schemas that
are the pydantic models' own, and the document the engine serves is this one. What the
answers look like is checked by schemathesis in ``test_fuzz.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from schemathesis.core.result import Ok

from adapters.sms.recipients import RecipientIn
from dispatcher.app import create_app
from dispatcher.core.models import AlertRequest
from dispatcher.openapi import spec
from tests.helpers import fujian
from tests.integration.engine import PROVINCE, Client, engine_settings

METHODS = {"get", "post", "put", "patch", "delete"}


def routes(tmp_path: Path) -> set[tuple[str, str]]:
    """(method, path template) of every route of a fully wired app (nothing is started)."""
    settings = engine_settings("redis://127.0.0.1:9/0", "mqtt://u:p@127.0.0.1:9", tmp_path)
    app = create_app(settings, tree=fujian())
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        # The console's pages and its static files are HTML for browsers, not the API.
        if route.method.lower() in METHODS and path and not _console_page(str(path)):
            found.add((route.method.lower(), str(path)))
    return found


def _console_page(path: str) -> bool:
    return not path.startswith("/api/") and path not in ("/metrics", "/healthz", "/readyz")


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in spec()["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def test_every_route_is_documented_and_nothing_else(tmp_path: Path) -> None:
    served = routes(tmp_path)
    documented = {(method, path) for method, path, _ in operations()}
    assert not served - documented, (
        f"routes missing from the OpenAPI document: {sorted(served - documented)}; add each "
        "with _op(...) in dispatcher/openapi.py"
    )
    assert not documented - served, f"documented but not served: {documented - served}"


def test_every_operation_declares_what_any_request_may_get() -> None:
    for method, path, op in operations():
        declared = set(op["responses"])
        assert "429" in declared, (method, path)  # the throttle answers before any handler
        if op.get("security") != []:
            assert {"400", "401", "503"} <= declared, (method, path)
        if "requestBody" in op:
            assert {"400", "413", "415"} <= declared, (method, path)
        for status, answer in op["responses"].items():
            assert answer["description"], (method, path, status)
            # /readyz's 503 is its own answer, saying which part is down.
            if status.startswith("4") or (status == "503" and path != "/readyz"):
                [(kind, media)] = answer["content"].items()
                assert kind == "application/json"
                assert media["schema"] == {"$ref": "#/components/schemas/Error"}


def test_request_schemas_are_the_models_own() -> None:
    schemas = spec()["components"]["schemas"]
    for model in (AlertRequest, RecipientIn):
        own = model.model_json_schema(ref_template="#/components/schemas/{model}")
        own.pop("$defs", None)
        assert schemas[model.__name__] == own
    body = spec()["paths"]["/api/v1/alerts"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AlertRequest"
    }


def test_the_limits_the_server_enforces_are_stated() -> None:
    params = {
        (path, p["name"]): p["schema"]
        for _, path, op in operations()
        for p in op.get("parameters", [])
    }
    assert params[("/api/v1/alerts", "limit")] == {"type": "integer", "minimum": 1, "maximum": 500}
    assert params[("/api/v1/terminals", "limit")]["maximum"] == 5000
    assert params[("/api/v1/terminals", "region")]["pattern"].startswith("^[0-9]{2}")
    assert params[("/api/v1/alerts/{alert_id}", "detail")]["enum"] == ["city", "county", "township"]
    assert params[("/api/v1/alerts", "Idempotency-Key")]["pattern"] == r"^[\x21-\x7e]{1,128}$"
    alert = spec()["components"]["schemas"]["AlertRequest"]
    # Exactly one of expires and expires_in, as AlertRequest._consistent demands.
    assert [one["required"] for one in alert["oneOf"]] == [["expires"], ["expires_in"]]


# Loaded when the suite is collected: schemathesis imports much of itself lazily, and pytest
# rewrites the modules of its plugin as they come; CPython 3.11.7 can fail that rewrite
# ("AST constructor recursion depth mismatch") when it happens deep in a long session.
_OPERATIONS = list(schemathesis.openapi.from_dict(spec()).get_all_operations())


def test_the_document_loads_as_openapi_3_1_with_links() -> None:
    results = _OPERATIONS
    assert all(isinstance(r, Ok) for r in results), [r for r in results if not isinstance(r, Ok)]
    names = {r.ok().label for r in results if isinstance(r, Ok)}
    assert "POST /api/v1/alerts" in names
    assert len(names) == len(operations())
    links = spec()["paths"]["/api/v1/alerts"]["post"]["responses"]["201"]["links"]
    assert links["get"]["parameters"] == {"alert_id": "$response.body#/id"}


async def test_the_engine_serves_this_document(api: Client) -> None:
    response = await api.get("/api/v1/openapi.json")
    assert response.status == 200
    assert await response.json() == spec()
    # No token needed, and the answer says what it is.
    assert response.content_type == "application/json"
    authorised = await api.get("/api/v1/openapi.json", headers=PROVINCE)
    assert await authorised.json() == spec()

"""The OpenAPI document, made to say exactly what the server enforces.

FastAPI derives the document from the models; a few rules live outside them and
are added here: ``EmailRequest`` (parsed by the route itself, so that every
problem is reported at once) is put in by hand with its rule that a body is
needed; ``from`` is required when ``POSTROOM_DEFAULT_FROM`` is not set (the
server refuses a request without it). ``tests/api/test_openapi_contract.py`` runs
Schemathesis against it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from postroom.config import Settings
from postroom.schemas.email import EmailRequest

#: bodies whose ``from`` falls back to POSTROOM_DEFAULT_FROM
_FROM_DEFAULTED = ("EmailRequest", "TestEmailRequest")


def build(app: FastAPI, settings: Settings) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    request_schema = EmailRequest.model_json_schema(
        by_alias=True, ref_template="#/components/schemas/{model}"
    )
    components.update(request_schema.pop("$defs", {}))
    components["EmailRequest"] = {**request_schema, **_HAS_BODY}
    if not settings.default_from:
        for name in _FROM_DEFAULTED:
            _require_from(components.get(name, {}))
    schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    schema["security"] = [{"bearer": []}]
    return schema


def _body_needed(text: str) -> dict[str, Any]:
    return {"required": [text], "properties": {text: {"type": "string", "minLength": 1}}}


#: what ``EmailRequest._has_body`` enforces: content text or html (templates join with
#: their feature)
_HAS_BODY = {
    "anyOf": [
        {"properties": {"content": {"anyOf": [_body_needed("text"), _body_needed("html")]}}},
    ]
}


def _require_from(model: dict[str, Any]) -> None:
    """``from`` must be given, and not as null."""
    required = model.setdefault("required", [])
    if "from" not in required:
        required.append("from")
    prop = model.get("properties", {}).get("from", {})
    if "anyOf" in prop:
        prop["anyOf"] = [o for o in prop["anyOf"] if o.get("type") != "null"]
        prop.pop("default", None)


def install(app: FastAPI, settings: Settings) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

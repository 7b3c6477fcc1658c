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
from postroom.schemas.bulk import BulkRequest
from postroom.schemas.email import ADDRESS_SCHEMA, EmailRequest

#: bodies whose ``from`` falls back to POSTROOM_DEFAULT_FROM
_FROM_DEFAULTED = ("EmailRequest", "TestEmailRequest")
#: every problem is application/problem+json, also FastAPI's own 422 for parameters
_PROBLEM_CONTENT = {"application/problem+json": {"schema": {"type": "object"}}}


def build(app: FastAPI, settings: Settings) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    request_schema = EmailRequest.model_json_schema(
        by_alias=True, ref_template="#/components/schemas/{model}"
    )
    components.update(request_schema.pop("$defs", {}))
    components["EmailRequest"] = {**request_schema, **_HAS_BODY}
    # POST /template: /send's request, with a template named
    components["TemplateSendRequest"] = {**request_schema, **_NAMES_TEMPLATE}
    bulk_schema = BulkRequest.model_json_schema(
        by_alias=True, ref_template="#/components/schemas/{model}"
    )
    components.update(bulk_schema.pop("$defs", {}))
    components["BulkRequest"] = {**bulk_schema, **_BULK_BODY}
    components["SuppressionRequest"] = _SUPPRESSION
    template_content = components.get("TemplateContent")
    if template_content is not None:  # a template needs html or text
        template_content.update(_TEXT_OR_HTML)
    _problems_everywhere(schema)
    if not settings.default_from:
        for name in (*_FROM_DEFAULTED, "TemplateSendRequest", "BulkRequest"):
            _require_from(components.get(name, {}))
    schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    schema["security"] = [{"bearer": []}]
    return schema


def _body_needed(text: str) -> dict[str, Any]:
    return {"required": [text], "properties": {text: {"type": "string", "minLength": 1}}}


def _present(name: str) -> dict[str, Any]:
    return {"required": [name], "properties": {name: {"not": {"type": "null"}}}}


def _absent(*names: str) -> list[dict[str, Any]]:
    """``null`` counts as absent, as it does for the server."""
    return [{"not": _present(name)} for name in names]


_TEXT_OR_HTML = {"anyOf": [_body_needed("text"), _body_needed("html")]}
#: ``templateId`` names the template: no subject, no content beside it
_BY_TEMPLATE_ID = {"allOf": [_present("templateId"), *_absent("subject", "content")]}
#: ``content.template`` names it: no subject, no text or html, no ``template*`` fields
_BY_CONTENT_TEMPLATE = {
    "allOf": [
        {
            "required": ["content"],
            "properties": {"content": {"allOf": [_present("template"), {"not": _TEXT_OR_HTML}]}},
        },
        *_absent("subject", "templateId", "templateData", "templateVersion"),
    ]
}
#: a request that names a template (its subject and body come from the template)
_NAMES_TEMPLATE = {"anyOf": [_BY_TEMPLATE_ID, _BY_CONTENT_TEMPLATE]}
#: what ``EmailRequest`` enforces: a subject and content text or html, or a template
_HAS_BODY = {
    "anyOf": [
        {
            "allOf": [
                _present("subject"),
                {
                    "required": ["content"],
                    "properties": {"content": {"allOf": [_TEXT_OR_HTML, *_absent("template")]}},
                },
                *_absent("templateId", "templateData", "templateVersion"),
            ]
        },
        _BY_TEMPLATE_ID,
        _BY_CONTENT_TEMPLATE,
    ]
}
#: what ``BulkRequest`` enforces: a shared subject and text or html, or a template
_BULK_BODY = {
    "anyOf": [
        {
            "allOf": [
                _present("subject"),
                {
                    "required": ["content"],
                    "properties": {"content": {"allOf": [_TEXT_OR_HTML, *_absent("template")]}},
                },
                *_absent("templateId", "templateData", "templateVersion"),
                {
                    "properties": {
                        "recipients": {
                            "items": {
                                "not": {
                                    "required": ["templateData"],
                                    "properties": {
                                        "templateData": {"type": "object", "minProperties": 1}
                                    },
                                }
                            }
                        }
                    }
                },
            ]
        },
        _BY_TEMPLATE_ID,
    ]
}
#: ``POST /suppressions`` (parsed by the route itself)
_SUPPRESSION = {
    "type": "object",
    "required": ["email"],
    "additionalProperties": False,
    "properties": {
        "email": {"type": "string", "minLength": 3, "maxLength": 254, **ADDRESS_SCHEMA},
        "scope": {"enum": ["global", "marketing"]},
        "reason": {"enum": ["hard-bounce", "soft-bounce", "complaint", "unsubscribe", "manual"]},
        "expiresAt": {"type": "string", "format": "date-time"},
    },
}


def _problems_everywhere(schema: dict[str, Any]) -> None:
    """Error answers are problem+json: FastAPI documents its 422 as plain JSON."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                if status[:1] in ("4", "5"):
                    response["content"] = _PROBLEM_CONTENT


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

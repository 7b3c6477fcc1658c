"""``POST /send/raw``: a finished MIME message into the same queue as ``POST /send``.

Two bodies are accepted:

- ``Content-Type: message/rfc822``: the message itself; envelope recipients in
  repeated ``?to=`` query parameters and the sender in ``?from=`` (both optional:
  by default the To, Cc and Bcc fields and the From field).
- ``Content-Type: application/json``: ``{"raw": "<base64>", "to": [...],
  "from": "...", "queue": "...", "type": "..."}``, ``raw`` alone required.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field, ValidationError

from postroom.api.deps import CurrentKey, IdempotencyKey, PostroomDep, require
from postroom.app import validation_errors
from postroom.errors import MessageError, RequestInvalid, UnsupportedMediaType
from postroom.schemas.base import ApiModel
from postroom.schemas.email import BASE64_PATTERN
from postroom.schemas.results import EmailSendResult
from postroom.services.raw_sending import MAX_RECIPIENTS, RawEnvelope
from postroom.types import ApiScope, EmailType

router = APIRouter(tags=["email"])

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
#: base64 is 4/3 of the bytes; a little room for the JSON around it
_JSON_OVERHEAD = 4096


class RawSendRequest(ApiModel):
    """The JSON form of a raw send."""

    #: the RFC 5322 message, base64-encoded
    raw: Annotated[
        str,
        Field(json_schema_extra={"pattern": BASE64_PATTERN, "contentEncoding": "base64"}),
    ]
    to: Annotated[list[str], Field(max_length=MAX_RECIPIENTS)] | None = None
    from_: str | None = Field(default=None, alias="from")
    queue: Annotated[str, Field(max_length=255)] | None = None
    type: EmailType = EmailType.TRANSACTIONAL


def _inline_schema(model: type[ApiModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` inlined, to sit inside a path item."""
    schema = model.model_json_schema(by_alias=True)
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)  # type: ignore[no-any-return]


@router.post(
    "/send/raw",
    status_code=202,
    response_model=EmailSendResult,
    dependencies=[Depends(require(ApiScope.SEND))],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "message/rfc822": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": _inline_schema(RawSendRequest)},
            },
        }
    },
    responses={401: _PROBLEM, 413: _PROBLEM, 415: _PROBLEM, 422: _PROBLEM},
)
async def send_raw(
    request: Request,
    postroom: PostroomDep,
    key: CurrentKey,
    to: Annotated[list[str] | None, Query()] = None,
    from_: Annotated[str | None, Query(alias="from")] = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Queue a finished MIME message. ``202`` means it is stored durably and will be sent."""
    limit = postroom.settings.max_message_bytes
    body = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    submitted_by = f"key:{key.prefix}"
    if content_type == "message/rfc822":
        mime = body
        envelope = RawEnvelope(
            mail_from=from_, recipients=to, source="api", submitted_by=submitted_by
        )
    elif content_type in ("application/json", ""):
        if len(body) > limit * 4 // 3 + _JSON_OVERHEAD:
            raise MessageError(f"the request is over the {limit}-byte message limit")
        try:
            parsed = RawSendRequest.model_validate(json.loads(body))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestInvalid([{"field": "body", "message": f"not valid JSON: {exc}"}]) from None
        except ValidationError as exc:
            raise RequestInvalid(validation_errors(exc)) from None
        try:
            mime = base64.b64decode(parsed.raw, validate=True)
        except (binascii.Error, ValueError):
            raise RequestInvalid([{"field": "raw", "message": "must be base64-encoded"}]) from None
        envelope = RawEnvelope(
            mail_from=parsed.from_,
            recipients=parsed.to,
            source="api",
            submitted_by=submitted_by,
            queue=parsed.queue,
            type=parsed.type,
        )
    else:
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not accepted: "
            "send message/rfc822 or application/json"
        )
    result = await postroom.send_raw(
        mime, envelope, idempotency_key=idempotency_key, api_key_id=key.id
    )
    return JSONResponse(result.dump(), status_code=202)

"""Email sending: ``POST /send`` and ``GET /status/{id}``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from postroom.api.bodies import JSONRoute, json_object, read_json
from postroom.api.deps import (
    CurrentKey,
    IdempotencyKey,
    PostroomDep,
    current_key,
    require,
    require_any,
)
from postroom.api.responses import ORJSONResponse
from postroom.app import Postroom
from postroom.errors import RequestInvalid
from postroom.schemas.results import EmailSendResult, EmailStatus
from postroom.services.keys import KeyInfo
from postroom.services.status import ANY_OWNER
from postroom.types import ApiScope

router = APIRouter(tags=["email"], route_class=JSONRoute)

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


@router.post(
    "/send",
    status_code=202,
    response_model=EmailSendResult,
    dependencies=[Depends(require(ApiScope.SEND))],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/EmailRequest"}}
            },
        }
    },
    responses={401: _PROBLEM, 422: _PROBLEM},
)
async def send_email(
    request: Request,
    postroom: PostroomDep,
    key: CurrentKey,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Queue an email. ``202`` means it is stored durably and will be sent."""
    # The body is validated here rather than by FastAPI so that the size limit from the
    # settings takes part in validation and every problem is reported at once.
    data = await json_object(request)
    return await _accept(postroom, data, key, idempotency_key)


async def send_email_direct(request: Request) -> Response:
    """``send_email`` as a plain Starlette endpoint, placed ahead of every other route.

    The busiest route pays neither FastAPI's matching through the included routers
    nor its dependency solving (together most of a request's CPU); the checks run in
    the same order as there: content type and JSON, the API key, its scope, the body's shape.
    ``send_email`` stays registered for the OpenAPI document and the 405 answers.
    """
    data = await read_json(request)
    postroom: Postroom = request.app.state.postroom
    key = await current_key(request, postroom)
    key.require(ApiScope.SEND)
    if not isinstance(data, dict):
        raise RequestInvalid([{"field": "body", "message": "must be a JSON object"}])
    return await _accept(postroom, data, key, request.headers.get("idempotency-key"))


async def _accept(
    postroom: Postroom, data: dict[str, Any], key: KeyInfo, idempotency_key: str | None
) -> Response:
    result = await postroom.send(data, idempotency_key=idempotency_key, api_key_id=key.id)
    return ORJSONResponse(result.dump(), status_code=202)


@router.get(
    "/status/{email_id}",
    response_model=EmailStatus,
    response_model_by_alias=True,
    response_model_exclude_none=True,
    dependencies=[Depends(require_any(ApiScope.SEND, ApiScope.READ))],
    responses={401: _PROBLEM, 404: _PROBLEM},
)
async def email_status(email_id: str, postroom: PostroomDep, key: CurrentKey) -> EmailStatus:
    """The email's status, its recipients and every delivery attempt. A ``send``-scoped
    key sees only the mail it sent (another's is 404); ``read`` sees every email."""
    owner = ANY_OWNER if key.allows(ApiScope.READ) else key.id
    return await postroom.status(email_id, owner=owner)

"""Email sending: ``POST /send`` and ``GET /status/{id}``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Request

from postroom.api.deps import PostroomDep, require
from postroom.api.responses import ORJSONResponse
from postroom.errors import RequestInvalid
from postroom.schemas.results import EmailSendResult, EmailStatus
from postroom.types import ApiScope

router = APIRouter(tags=["email"])

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
    idempotency_key: Annotated[str | None, Header()] = None,
) -> ORJSONResponse:
    """Queue an email. ``202`` means it is stored durably and will be sent."""
    # The body is parsed here rather than by FastAPI so that the size limit from the
    # settings takes part in validation and every problem is reported at once.
    body = await request.body()
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson is strict where the standard parser is not (e.g. a lone surrogate, which
        # validation then reports per field): the slow path decides, with its messages
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            problem = {"field": "body", "message": f"not valid JSON: {exc}"}
            raise RequestInvalid([problem]) from None
    if not isinstance(data, dict):
        raise RequestInvalid([{"field": "body", "message": "must be a JSON object"}])
    result = await postroom.send(data, idempotency_key=idempotency_key)
    return ORJSONResponse(result.dump(), status_code=202)


@router.get(
    "/status/{email_id}",
    response_model=EmailStatus,
    response_model_by_alias=True,
    response_model_exclude_none=True,
    dependencies=[Depends(require(ApiScope.SEND))],
    responses={401: _PROBLEM, 404: _PROBLEM},
)
async def email_status(email_id: str, postroom: PostroomDep) -> EmailStatus:
    """The email's status, its recipients and every delivery attempt."""
    return await postroom.status(email_id)

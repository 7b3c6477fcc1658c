"""Email sending: ``POST /send`` and ``GET /status/{id}``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request

from postroom.api.bodies import JSONRoute
from postroom.api.deps import CurrentKey, PostroomDep, require, require_any
from postroom.api.responses import ORJSONResponse
from postroom.errors import RequestInvalid
from postroom.schemas.results import EmailSendResult, EmailStatus
from postroom.services.sending import MAX_IDEMPOTENCY_KEY
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
    idempotency_key: Annotated[
        str | None,
        Header(
            description="Makes retries safe: a repeat within 24 hours returns the first "
            "response; the same key with another body is 422. Scoped to the API key.",
            json_schema_extra={"minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY, "pattern": "\\S"},
        ),
    ] = None,
) -> ORJSONResponse:
    """Queue an email. ``202`` means it is stored durably and will be sent."""
    # The body is validated here rather than by FastAPI so that the size limit from the
    # settings takes part in validation and every problem is reported at once.
    data: Any = await request.json()  # parsed (and checked) by JSONRoute
    if not isinstance(data, dict):
        raise RequestInvalid([{"field": "body", "message": "must be a JSON object"}])
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

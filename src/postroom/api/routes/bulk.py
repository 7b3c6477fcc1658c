"""Bulk sending: ``POST /bulk`` and ``GET /bulk/{id}`` (progress)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from postroom.api.bodies import JSONRoute, json_object
from postroom.api.deps import CurrentKey, IdempotencyKey, PostroomDep, require
from postroom.schemas.bulk import BulkAccepted, BulkProgress
from postroom.services.status import ANY_OWNER
from postroom.types import ApiScope

router = APIRouter(tags=["email"], route_class=JSONRoute)

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


@router.post(
    "/bulk",
    status_code=202,
    response_model=BulkAccepted,
    dependencies=[Depends(require(ApiScope.SEND))],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/BulkRequest"}}
            },
        }
    },
    responses={401: _PROBLEM, 409: _PROBLEM, 422: _PROBLEM},
)
async def send_bulk(
    request: Request,
    postroom: PostroomDep,
    key: CurrentKey,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Queue one message (or template) for up to 100,000 recipients, each their own
    email. ``202`` comes after every one is durably queued; a bad recipient is a 422
    listing it by index (``recipients.41.email``) and nothing is queued."""
    data = await json_object(request)
    result = await postroom.send_bulk(data, idempotency_key=idempotency_key, api_key_id=key.id)
    return JSONResponse(result.dump(), status_code=202)


@router.get(
    "/bulk/{bulk_id}",
    response_model=BulkProgress,
    dependencies=[Depends(require(ApiScope.SEND))],
    responses={401: _PROBLEM, 404: _PROBLEM},
)
async def bulk_progress(bulk_id: str, postroom: PostroomDep, key: CurrentKey) -> BulkProgress:
    """How far a bulk send is: queued, sent, failed, suppressed, and every status.
    A ``send``-scoped key sees only its own bulk sends (another's is 404)."""
    owner = ANY_OWNER if key.allows(ApiScope.READ) else key.id
    return await postroom.bulk.progress(bulk_id, owner=owner)

"""Outgoing event webhooks: ``/webhooks/endpoints`` (CRUD, secret rotation), each
endpoint's delivery log and manual redelivery. Reading needs ``read``; changes
need ``admin``, since an endpoint receives every recipient's address and events."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse

from postroom.api.bodies import JSONRoute
from postroom.api.deps import PostroomDep, require
from postroom.events.endpoints import PAGE_SIZE, Endpoints
from postroom.schemas.webhook_endpoints import EndpointCreate, EndpointUpdate
from postroom.types import ApiScope

router = APIRouter(tags=["webhooks"], route_class=JSONRoute)

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_READ = [Depends(require(ApiScope.READ))]
_ADMIN = [Depends(require(ApiScope.ADMIN))]
_ERRORS: dict[int | str, dict[str, Any]] = dict.fromkeys((401, 403, 404, 422), _PROBLEM)
_BASE = "/webhooks/endpoints"


def get_endpoints(postroom: PostroomDep) -> Endpoints:
    return postroom.webhooks


EndpointsDep = Annotated[Endpoints, Depends(get_endpoints)]
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=200, description="nextCursor of the last page")]


@router.get(_BASE, dependencies=_READ, responses=_ERRORS)
async def list_endpoints(
    store: EndpointsDep, limit: Limit = PAGE_SIZE, cursor: Cursor = None
) -> dict[str, Any]:
    """Registered endpoints, oldest first; pass ``nextCursor`` back for more."""
    return await store.list_page(limit=limit, cursor=cursor)


@router.post(_BASE, status_code=201, dependencies=_ADMIN, responses=_ERRORS)
async def create_endpoint(body: EndpointCreate, store: EndpointsDep) -> dict[str, Any]:
    """Register an endpoint. The answer's ``secret`` (``whsec_…``) signs every request
    and is shown only now. A URL that reaches a non-public address is refused (422)
    unless its network is in ``allowNetworks``."""
    return await store.create(
        url=body.url,
        description=body.description,
        event_types=body.event_types,
        enabled=body.enabled,
        allow_networks=body.allow_networks,
    )


@router.get(_BASE + "/{endpoint_id}", dependencies=_READ, responses=_ERRORS)
async def get_endpoint(endpoint_id: uuid.UUID, store: EndpointsDep) -> dict[str, Any]:
    return await store.get(endpoint_id)


@router.put(_BASE + "/{endpoint_id}", dependencies=_ADMIN, responses=_ERRORS)
async def update_endpoint(
    endpoint_id: uuid.UUID, body: EndpointUpdate, store: EndpointsDep
) -> dict[str, Any]:
    """Change the fields given (a ``null`` leaves a field as it is, except
    ``description``, which it clears)."""
    given = body.model_dump(exclude_unset=True)
    changes = {k: v for k, v in given.items() if v is not None or k == "description"}
    return await store.update(endpoint_id, changes)


@router.delete(_BASE + "/{endpoint_id}", status_code=204, dependencies=_ADMIN, responses=_ERRORS)
async def delete_endpoint(endpoint_id: uuid.UUID, store: EndpointsDep) -> Response:
    """Remove the endpoint and its delivery log; undelivered events are dropped."""
    await store.delete(endpoint_id)
    return Response(status_code=204)


@router.post(_BASE + "/{endpoint_id}/rotate-secret", dependencies=_ADMIN, responses=_ERRORS)
async def rotate_secret(endpoint_id: uuid.UUID, store: EndpointsDep) -> dict[str, Any]:
    """A new secret, used from the next request on; the old one stops working at once."""
    return await store.rotate_secret(endpoint_id)


@router.get(_BASE + "/{endpoint_id}/deliveries", dependencies=_READ, responses=_ERRORS)
async def list_deliveries(
    endpoint_id: uuid.UUID,
    store: EndpointsDep,
    status: Annotated[
        Literal["pending", "delivering", "delivered", "failed"] | None, Query()
    ] = None,
    limit: Limit = PAGE_SIZE,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The delivery log, newest first: each event's state and every attempt (status
    code, latency, error)."""
    return await store.deliveries(endpoint_id, status=status, limit=limit, cursor=cursor)


@router.post(
    _BASE + "/{endpoint_id}/deliveries/{delivery_id}/retry",
    status_code=202,
    dependencies=_ADMIN,
    responses={**_ERRORS, 409: _PROBLEM},
)
async def retry_delivery(
    endpoint_id: uuid.UUID, delivery_id: uuid.UUID, store: EndpointsDep
) -> JSONResponse:
    """Send the event again now (delivered or failed alike), with a fresh attempt budget."""
    return JSONResponse(await store.redeliver(endpoint_id, delivery_id), status_code=202)

"""Delivery tracking and suppressions: ``GET /tracking/{id}``, ``/suppressions``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from postroom.api.bodies import JSONRoute, json_object
from postroom.api.deps import PostroomDep, require
from postroom.errors import RequestInvalid
from postroom.schemas.email import valid_address
from postroom.tracking import events
from postroom.tracking.context import tracking_context
from postroom.tracking.inbound import Inbound
from postroom.tracking.suppressions import PAGE_SIZE, Suppressions
from postroom.types import ApiScope

router = APIRouter(tags=["tracking"], route_class=JSONRoute)

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_READ = [Depends(require(ApiScope.READ))]
_MANAGE = [Depends(require(ApiScope.MANAGE))]
_ERRORS: dict[int | str, dict[str, Any]] = {401: _PROBLEM, 403: _PROBLEM, 404: _PROBLEM}


@router.get("/tracking/{ident}", dependencies=_READ, responses=_ERRORS)
async def delivery_tracking(ident: str, postroom: PostroomDep) -> dict[str, Any]:
    """The spec's ``getDeliveryStatus`` for one recipient: by its record id, its
    email's id (single recipient) or its delivery (provider message) id."""
    return await events.delivery_status(postroom.engine, ident)


@router.post("/inbound/raw", dependencies=_MANAGE, responses={**_ERRORS, 422: _PROBLEM})
async def inbound_raw(request: Request, postroom: PostroomDep) -> dict[str, Any]:
    """A bounce (DSN, RFC 3464, or a plain-text bounce) or complaint (ARF, RFC 5965)
    as raw MIME in the body; its events are applied to the records it is about."""
    body = await request.body()
    if not body.strip():
        raise RequestInvalid([{"field": "body", "message": "send the report as raw MIME"}])
    inbound = Inbound(
        postroom.engine,
        postroom.clock,
        soft_limit=postroom.settings.suppress_after_soft_bounces,
        tracking=tracking_context(request.app.state, postroom.settings),
    )
    return await inbound.receive(body)


def get_suppressions(postroom: PostroomDep) -> Suppressions:
    return Suppressions(postroom.engine)


SuppressionsDep = Annotated[Suppressions, Depends(get_suppressions)]


@router.get("/suppressions", dependencies=_READ, responses=_ERRORS)
async def list_suppressions(
    store: SuppressionsDep,
    search: Annotated[str | None, Query(description="part of the address")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = PAGE_SIZE,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Suppressed addresses in address order; pass ``nextCursor`` back for more."""
    return await store.page(search=search, limit=limit, cursor=cursor)


@router.get(
    "/suppressions/export",
    dependencies=_READ,
    responses={**_ERRORS, 200: {"content": {"text/csv": {}}}},
)
async def export_suppressions(store: SuppressionsDep) -> Response:
    """Every suppression as CSV (``email,scope,reason,createdAt,expiresAt``)."""
    return Response(await store.export_csv(), media_type="text/csv")


@router.post("/suppressions/import", dependencies=_MANAGE, responses={**_ERRORS, 422: _PROBLEM})
async def import_suppressions(
    request: Request, store: SuppressionsDep, postroom: PostroomDep
) -> dict[str, int]:
    """Add the rows of a CSV body (header ``email`` and optional ``scope``,
    ``reason``, ``expiresAt``); a bad row is reported and nothing is added."""
    try:
        text = (await request.body()).decode()
    except UnicodeDecodeError:
        raise RequestInvalid([{"field": "body", "message": "the CSV is not UTF-8"}]) from None
    return await store.import_csv(text, now=postroom.clock.now())


def _field(data: dict[str, Any], name: str, default: str | None = None) -> str | None:
    value = data.get(name, default)
    if value is not None and not isinstance(value, str):
        raise RequestInvalid([{"field": name, "message": "must be a string"}])
    return value


@router.post(
    "/suppressions",
    status_code=201,
    dependencies=_MANAGE,
    responses={
        **_ERRORS,
        200: {"description": "The address was already suppressed so."},
        422: _PROBLEM,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/SuppressionRequest"}}
            },
        }
    },
)
async def add_suppression(
    request: Request, store: SuppressionsDep, postroom: PostroomDep
) -> JSONResponse:
    """Suppress ``{"email", "scope"?: global|marketing, "reason"?, "expiresAt"?}``."""
    data = await json_object(request)
    unknown = sorted(set(data) - {"email", "scope", "reason", "expiresAt"})
    if unknown:
        raise RequestInvalid([{"field": unknown[0], "message": "is not a suppression field"}])
    email = _field(data, "email")
    if not email:
        raise RequestInvalid([{"field": "email", "message": "is required"}])
    try:
        email = valid_address(email)
    except ValueError as exc:
        raise RequestInvalid([{"field": "email", "message": str(exc)}]) from None
    expires: datetime | None = None
    if (raw := _field(data, "expiresAt")) is not None:
        try:
            expires = datetime.fromisoformat(raw)
        except ValueError:
            raise RequestInvalid(
                [{"field": "expiresAt", "message": "not an ISO 8601 time"}]
            ) from None
        expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
    added = await store.add(
        email,
        scope=_field(data, "scope", "global") or "global",
        reason=_field(data, "reason", "manual") or "manual",
        now=postroom.clock.now(),
        expires_at=expires,
    )
    return JSONResponse(
        {"email": email.strip().lower(), "added": added}, status_code=201 if added else 200
    )


@router.delete("/suppressions/{email}", dependencies=_MANAGE, responses=_ERRORS)
async def remove_suppression(
    email: str,
    store: SuppressionsDep,
    scope: Annotated[str | None, Query(description="only this scope")] = None,
) -> dict[str, Any]:
    """Lift the suppression of ``email`` (every scope, or only ``scope``)."""
    return {"email": email.strip().lower(), "removed": await store.remove(email, scope=scope)}

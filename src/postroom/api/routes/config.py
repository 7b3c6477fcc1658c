"""``GET /config`` and ``PUT /config``: the system configuration (``EmailSystemConfig``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends

from postroom.api.bodies import JSONRoute
from postroom.api.deps import PostroomDep, require
from postroom.services.system_config import SystemConfigService
from postroom.types import ApiScope

router = APIRouter(tags=["config"], route_class=JSONRoute)

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_ERRORS: dict[int | str, dict[str, Any]] = {401: _PROBLEM, 403: _PROBLEM, 422: _PROBLEM}


@router.get("/config", dependencies=[Depends(require(ApiScope.READ))], responses=_ERRORS)
async def get_config(postroom: PostroomDep) -> dict[str, Any]:
    """The whole configuration, secrets masked."""
    return await SystemConfigService(postroom).read()


@router.put("/config", dependencies=[Depends(require(ApiScope.ADMIN))], responses=_ERRORS)
async def put_config(
    postroom: PostroomDep,
    body: dict[str, Any] = Body(
        openapi_examples={
            "reorder": {
                "value": {
                    "defaultProvider": "sendgrid",
                    "fallbackProviders": ["relay"],
                    "queueConfig": {"queues": {"bulk": {"concurrency": 4}}},
                }
            }
        }
    ),
) -> dict[str, Any]:
    """Change what may change at runtime: provider order (``defaultProvider``,
    ``fallbackProviders``) and per-queue ``enabled``, ``concurrency``, ``batchSize``,
    ``retry``. Running workers pick changes up within seconds. Any other section, or
    an invalid value, is a 422 listing every problem; nothing is written then."""
    return await SystemConfigService(postroom).update(body)

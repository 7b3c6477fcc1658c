"""``GET /healthz``: 200 while the database can be read and written; no authentication."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from postroom import __version__
from postroom.api import dbfailure
from postroom.api.deps import PostroomDep
from postroom.api.problems import problem
from postroom.db import probe

router = APIRouter(tags=["health"])

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


@router.get(
    "/healthz",
    openapi_extra={"security": []},
    responses={503: _PROBLEM, 507: _PROBLEM},
)
async def healthz(postroom: PostroomDep) -> JSONResponse:
    """200 while mail can be accepted: the database answers and a write commits.
    503 when the database is unreachable, 507 when it has no space left; the
    detail says why."""
    try:
        await probe.check(postroom.engine, now=postroom.clock.now())
    except Exception as exc:
        failure = dbfailure.classify(exc) or dbfailure.Failure(
            http_status=503,
            code="unavailable",
            summary="the database is not working",
            reason=f"{type(exc).__name__}: {exc}"[:200],
            retry_after_s=5,
        )
        return problem(
            failure.http_status,
            failure.code,
            f"{failure.summary} ({failure.reason})",
            headers={"Retry-After": str(failure.retry_after_s)},
        )
    return JSONResponse({"status": "ok", "version": __version__})

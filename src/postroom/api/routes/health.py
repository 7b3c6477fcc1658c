"""``GET /healthz``: 200 when the database answers; no authentication."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from postroom import __version__
from postroom.api.deps import PostroomDep
from postroom.api.problems import problem

router = APIRouter(tags=["health"])


@router.get("/healthz", include_in_schema=True)
async def healthz(postroom: PostroomDep) -> JSONResponse:
    try:
        await postroom.ping()
    except Exception as exc:
        return problem(503, "unavailable", f"the database is not reachable: {type(exc).__name__}")
    return JSONResponse({"status": "ok", "version": __version__})

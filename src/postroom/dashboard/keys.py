"""API keys: list (prefixes only), create (the key is shown once), revoke.

Through ``KeyStore``, the same service as ``postroom keys``. A viewer sees the
list; only an admin creates or revokes. The new key is in the answer to the POST
alone (``Cache-Control: no-store``), never in a URL or a redirect.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import RedirectResponse, Response

from postroom.dashboard.render import DashboardRoute, page
from postroom.dashboard.security import AdminAction, ByAdmin, CurrentSession, postroom_of
from postroom.errors import MessageError, PostroomError
from postroom.services.users import Session
from postroom.types import ApiScope

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

SCOPES = [s.value for s in ApiScope]


async def _render(
    request: Request, session: Session, *, status: int = 200, **extra: object
) -> Response:
    keys = await postroom_of(request).keys.list()
    keys.sort(key=lambda k: (k.revoked_at is not None, k.created_at))
    return page(
        request, "keys.html", session, status_code=status, keys=keys, scopes=SCOPES, **extra
    )


@router.get("/keys")
async def keys(request: Request, session: CurrentSession, revoked: str = "") -> Response:
    return await _render(request, session, revoked=revoked)


@router.post("/keys")
async def create(request: Request, posted: AdminAction) -> Response:
    name = posted.form.get("name", "").strip() or "dashboard"
    scopes = [s for s in SCOPES if posted.form.get(f"scope_{s}") == "on"]
    try:
        if len(name) > 255:
            raise MessageError("the name has at most 255 characters")
        key, info = await postroom_of(request).keys.create(name, scopes)
    except PostroomError as exc:
        return await _render(request, posted.session, status=422, error=exc.message)
    return await _render(request, posted.session, created=key, created_info=info)


@router.post("/keys/{prefix}/revoke", dependencies=[ByAdmin])
async def revoke(request: Request, prefix: Annotated[str, Path(max_length=64)]) -> Response:
    info = await postroom_of(request).keys.revoke(prefix)
    return RedirectResponse(f"/keys?revoked={info.prefix}", 303)

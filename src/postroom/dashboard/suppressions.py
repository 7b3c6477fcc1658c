"""The suppressions page: search, page through, add and lift suppressions.

It uses ``Suppressions``, the service behind ``/suppressions``, and checks an added
address as ``POST /suppressions`` does. Added here, a suppression's reason is
``manual``; scope ``global`` stops all mail to the address, ``marketing`` only
marketing mail.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from postroom.dashboard.render import DashboardRoute, cursor_pages, page, parsed_time
from postroom.dashboard.security import AdminAction, CurrentSession, postroom_of
from postroom.errors import MessageError, NotFound
from postroom.schemas.email import valid_address
from postroom.services.users import Session
from postroom.tracking.suppressions import SCOPES, Suppressions

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

PAGE_SIZE = 50
NOTICES = {
    "added": "{} suppressed.",
    "already": "{} was already suppressed so.",
    "removed": "The suppression of {} was lifted.",
}


def store_of(request: Request) -> Suppressions:
    return Suppressions(postroom_of(request).engine)


async def _render(
    request: Request,
    session: Session,
    *,
    search: str = "",
    cursor: str = "",
    status: int = 200,
    **extra: object,
) -> Response:
    found = await store_of(request).page(
        search=search.strip() or None, limit=PAGE_SIZE, cursor=cursor or None
    )
    rows = [
        {**r, "createdAt": parsed_time(r["createdAt"]), "expires": parsed_time(r["expiresAt"])}
        for r in found["suppressions"]
    ]
    query = {"search": search} if search else {}
    return page(
        request,
        "suppressions.html",
        session,
        status_code=status,
        rows=rows,
        search=search,
        **cursor_pages(query, cursor, found["nextCursor"]),
        scopes=SCOPES,
        **extra,
    )


@router.get("/suppressions")
async def suppressions(
    request: Request,
    session: CurrentSession,
    search: str = "",
    cursor: str = "",
    done: str = "",
    email: str = "",
) -> Response:
    notice = NOTICES[done].format(email) if done in NOTICES and email else ""
    return await _render(request, session, search=search, cursor=cursor, notice=notice)


def _expiry(raw: str) -> datetime | None:
    """A ``datetime-local`` or date value (UTC); it must lie ahead."""
    if not raw.strip():
        return None
    try:
        at = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise MessageError("expires: give a date and time, YYYY-MM-DD HH:MM (UTC)") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@router.post("/suppressions")
async def add(request: Request, posted: AdminAction) -> Response:
    form = posted.form
    now = postroom_of(request).clock.now()
    try:
        address = valid_address(form.get("email", "").strip())
    except ValueError as exc:
        return await _refused(request, posted.session, form, f"email: {exc}")
    try:
        expires = _expiry(form.get("expires", ""))
        if expires is not None and expires <= now:
            raise MessageError("expires: give a time in the future, or leave it empty")
        added = await store_of(request).add(
            address,
            scope=form.get("scope", "global"),
            reason="manual",
            now=now,
            expires_at=expires,
        )
    except MessageError as exc:
        return await _refused(request, posted.session, form, exc.message)
    query = urlencode({"done": "added" if added else "already", "email": address.lower()})
    return RedirectResponse(f"/suppressions?{query}", 303)


async def _refused(
    request: Request, session: Session, form: dict[str, str], error: str
) -> Response:
    shown = {k: form.get(k, "") for k in ("email", "scope", "expires")}
    return await _render(request, session, status=422, error=error, form=shown)


@router.post("/suppressions/remove")
async def remove(request: Request, posted: AdminAction) -> Response:
    email = posted.form.get("email", "")
    scope = posted.form.get("scope") or None
    if scope is not None and scope not in SCOPES:
        raise NotFound(f"no suppression scope {scope!r}")
    await store_of(request).remove(email, scope=scope)
    query = urlencode({"done": "removed", "email": email.strip().lower()})
    return RedirectResponse(f"/suppressions?{query}", 303)

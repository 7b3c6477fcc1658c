"""Who is signed in, CSRF, and the headers every dashboard answer carries.

- **Session**: a random token in the ``postroom_session`` cookie (HttpOnly,
  SameSite=Lax, Secure when the request came over https, path ``/``); the
  database keeps its hash (``services.users``).
- **CSRF**: every state-changing request is a POST that must carry the session's
  token, as the ``csrf_token`` form field or the ``X-CSRF-Token`` header (htmx). The
  sign-in form, before any session, uses a double-submit cookie instead. A
  request whose ``Origin`` names another site is refused as well.
- **Headers**: a Content-Security-Policy that admits scripts, styles and frames only
  from this origin (no inline script, no eval), ``frame-ancestors 'none'`` and
  ``X-Frame-Options: DENY`` (the message frame alone allows this origin), no
  sniffing, no referrer to other sites (``same-origin``: with ``no-referrer`` browsers
  send ``Origin: null`` on our own forms). Email HTML has its own, stricter policy (``outbox``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qsl, urlsplit

from fastapi import Depends, Request
from starlette.responses import Response

from postroom.app import Postroom
from postroom.constant_time import same_secret
from postroom.errors import AuthError, ForbiddenError
from postroom.services.users import Session

SESSION_COOKIE = "postroom_session"
LOGIN_CSRF_COOKIE = "postroom_login_csrf"
MAX_FORM_BYTES = 64 * 1024
#: the template editor posts a whole template (subject, HTML and text up to 512 KiB)
EDITOR_FORM_BYTES = 1536 * 1024

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


class SignInRequired(AuthError):
    """Sign in to see this page."""


class CsrfRefused(ForbiddenError):
    """The form did not come from this dashboard or has expired: reload the page and try again."""

    code = "csrf"


def secure_headers(response: Response) -> None:
    """The page headers, where the answer has not set its own."""
    response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Cache-Control", "no-store")


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=is_https(request),
    )


def postroom_of(request: Request) -> Postroom:
    return request.app.state.postroom  # type: ignore[no-any-return]


async def current_session(request: Request) -> Session:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        session = await postroom_of(request).users.session(token)
        if session is not None:
            return session
    raise SignInRequired()


CurrentSession = Annotated[Session, Depends(current_session)]
#: for routes that need a signed-in user but not the session itself
SignedIn = Depends(current_session)


async def read_form(request: Request, max_bytes: int = MAX_FORM_BYTES) -> dict[str, str]:
    """A urlencoded form body (the dashboard's forms carry no files)."""
    body = await request.body()
    if len(body) > max_bytes:
        raise ForbiddenError("the form is too large")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another site."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


@dataclass(frozen=True, slots=True)
class Posted:
    """A state-changing request that passed the CSRF check."""

    session: Session
    form: dict[str, str]


def _checked(request: Request, session: Session, form: dict[str, str]) -> Posted:
    sent = request.headers.get("x-csrf-token") or form.get("csrf_token", "")
    if not same_origin(request) or not same_secret(sent, session.csrf_token):
        raise CsrfRefused()
    return Posted(session=session, form=form)


async def posted(request: Request, session: CurrentSession) -> Posted:
    return _checked(request, session, await read_form(request))


async def posted_editor(request: Request, session: CurrentSession) -> Posted:
    """``posted`` for the template editor's larger forms."""
    return _checked(request, session, await read_form(request, EDITOR_FORM_BYTES))


def _admin_only(action: Posted) -> Posted:
    if not action.session.user.is_admin:
        raise ForbiddenError("only an admin may change this")
    return action


async def posted_by_admin(action: Annotated[Posted, Depends(posted)]) -> Posted:
    return _admin_only(action)


async def editor_by_admin(action: Annotated[Posted, Depends(posted_editor)]) -> Posted:
    return _admin_only(action)


Action = Annotated[Posted, Depends(posted)]
AdminAction = Annotated[Posted, Depends(posted_by_admin)]
#: a template editor's form: a viewer may preview, only an admin save
EditorAction = Annotated[Posted, Depends(posted_editor)]
EditorAdminAction = Annotated[Posted, Depends(editor_by_admin)]
#: for admin actions that need no form field
ByAdmin = Depends(posted_by_admin)


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


def login_token_ok(request: Request, form: dict[str, str]) -> bool:
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    sent = form.get("csrf_token", "")
    return bool(cookie) and same_origin(request) and same_secret(sent, cookie)

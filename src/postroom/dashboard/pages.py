"""Sign-in, the overview and the queues pages."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Request
from starlette.responses import RedirectResponse, Response

from postroom.dashboard import security
from postroom.dashboard.render import DashboardRoute, page
from postroom.dashboard.security import CurrentSession, postroom_of
from postroom.errors import NotFound
from postroom.services.overview import OverviewReader
from postroom.services.providers import ProviderService
from postroom.services.queues import QueueManager
from postroom.services.users import SESSION_TTL, SignInFailed

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

QueueKey = Annotated[str, Path(max_length=255)]
#: what a queue button does, and the notice shown after it
QUEUE_ACTIONS = {"pause": "paused", "resume": "resumed", "retry": "retried"}


def queue_manager(request: Request) -> QueueManager:
    pr = postroom_of(request)
    return QueueManager(
        pr.engine, pr.clock, pr.queues, default_concurrency=pr.settings.worker.concurrency
    )


def _safe_next(target: str) -> str:
    """Only a path on this site: never ``//evil.example`` or an absolute URL."""
    if target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


# -- sign-in ---------------------------------------------------------------------------


def _login_page(request: Request, *, next_: str, error: str = "", status: int = 200) -> Response:
    token = security.new_login_token()
    response = page(
        request, "login.html", None, status_code=status, login_token=token, next=next_, error=error
    )
    security.set_cookie(response, request, security.LOGIN_CSRF_COOKIE, token, 3600)
    return response


@router.get("/login")
async def login_form(request: Request, next: str = "/") -> Response:
    return _login_page(request, next_=_safe_next(next))


@router.post("/login")
async def login(request: Request) -> Response:
    form = await security.read_form(request)
    next_ = _safe_next(form.get("next", "/"))
    if not security.login_token_ok(request, form):
        return _login_page(request, next_=next_, status=403, error=security.CsrfRefused().message)
    users = postroom_of(request).users
    try:
        user = await users.authenticate(form.get("name", ""), form.get("password", ""))
    except SignInFailed as exc:
        return _login_page(request, next_=next_, status=401, error=exc.message)
    token, _ = await users.open_session(user)
    response = RedirectResponse(next_, 303)
    security.set_cookie(
        response, request, security.SESSION_COOKIE, token, int(SESSION_TTL.total_seconds())
    )
    response.delete_cookie(security.LOGIN_CSRF_COOKIE, path="/")
    return response


@router.post("/logout", dependencies=[Depends(security.posted)])
async def logout(request: Request) -> Response:
    token = request.cookies.get(security.SESSION_COOKIE, "")
    await postroom_of(request).users.close_session(token)
    response = RedirectResponse("/login", 303)
    response.delete_cookie(security.SESSION_COOKIE, path="/")
    return response


# -- overview --------------------------------------------------------------------------


async def _overview(request: Request) -> dict[str, Any]:
    pr = postroom_of(request)
    reader = OverviewReader(pr.engine, pr.clock, queue_manager(request), ProviderService.of(pr))
    return {"o": await reader.read()}


@router.get("/")
async def overview(request: Request, session: CurrentSession) -> Response:
    return page(request, "overview.html", session, **await _overview(request))


@router.get("/overview/figures")
async def overview_figures(request: Request, session: CurrentSession) -> Response:
    """The overview's live part, polled by htmx."""
    return page(request, "overview_figures.html", session, **await _overview(request))


# -- queues ----------------------------------------------------------------------------


@router.get("/queues")
async def queues(
    request: Request, session: CurrentSession, done: str = "", queue: str = ""
) -> Response:
    found = await queue_manager(request).list_queues()
    notice = ""
    if done in QUEUE_ACTIONS.values() and any(q.name == queue for q in found):
        notice = f"Queue {queue} {done}."
    return page(request, "queues.html", session, queues=found, notice=notice)


@router.post("/queues/{queue}/{action}", dependencies=[security.ByAdmin])
async def queue_action(request: Request, queue: QueueKey, action: str) -> Response:
    manager = queue_manager(request)
    if action == "pause":
        status = await manager.pause(queue)
    elif action == "resume":
        status = await manager.resume(queue)
    elif action == "retry":
        await manager.retry_failed(queue)
        status = await manager.status(queue)
    else:
        raise NotFound(f"no queue action {action!r}")
    query = urlencode({"done": QUEUE_ACTIONS[action], "queue": status.name})
    return RedirectResponse(f"/queues?{query}", 303)

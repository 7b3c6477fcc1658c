"""Rendering: the Jinja2 environment and the route class every dashboard page uses.

``DashboardRoute`` turns the errors an operator can meet into pages (a sign-in
redirect, or a page that says what went wrong with the right status) and puts the
security headers on every answer, so no page can forget them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import RedirectResponse, Response

from postroom.dashboard import security
from postroom.errors import PostroomError
from postroom.services.users import Session

log = logging.getLogger(__name__)


def cursor_pages(query: dict[str, str], cursor: str, next_cursor: str | None) -> dict[str, Any]:
    """The links of a cursor-paged list (``pages.html``): back to the first page when
    on a later one, and on to the next page when there is one; ``query`` is what the
    list is filtered by, kept on both."""
    return {
        "first_page": bool(cursor),
        "first_link": "?" + urlencode(query),
        "next_link": "?" + urlencode({**query, "cursor": next_cursor}) if next_cursor else "",
    }


def parsed_time(raw: str | None) -> datetime | None:
    """An ISO time from a service's JSON answer, for the ``when`` filter."""
    return datetime.fromisoformat(raw) if raw else None


_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S} UTC"


def _percent(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f} %"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.2f} s"


_env.filters.update(when=_when, percent=_percent, ms=_ms, number=lambda n: f"{n:,}")
templates = Jinja2Templates(env=_env)


def page(
    request: Request,
    name: str,
    session: Session | None,
    status_code: int = 200,
    **context: Any,
) -> Response:
    """A page (or, for an htmx request to a fragment template, the fragment)."""
    context.update(
        request=request,
        user=session.user if session else None,
        csrf_token=session.csrf_token if session else "",
    )
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def error_page(request: Request, status_code: int, message: str) -> Response:
    return page(
        request, "error.html", None, status_code=status_code, message=message, code=status_code
    )


class DashboardRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except security.SignInRequired:
                if request.headers.get("hx-request") == "true":
                    # htmx would follow a redirect and swap the sign-in page into a
                    # fragment; this header makes it load the sign-in page instead
                    response = Response(status_code=401, headers={"HX-Redirect": "/login"})
                else:
                    target = request.url.path + (
                        f"?{request.url.query}" if request.url.query else ""
                    )
                    response = RedirectResponse(f"/login?next={quote(target, safe='')}", 303)
            except PostroomError as exc:
                if exc.http_status >= 500:
                    log.error("dashboard: %s", exc.message)
                response = error_page(request, exc.http_status, exc.message)
            except RequestValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()
                )
                response = error_page(request, 422, f"the request is invalid: {problems}")
            security.secure_headers(response)
            return response

        return route

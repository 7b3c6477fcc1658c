"""Public tracking routes under ``POSTROOM_PUBLIC_URL``: no API key, a signed token.

``GET /t/o/{token}.gif`` (open pixel), ``GET|HEAD /t/c/{token}`` (click redirect),
``GET /t/u/{token}`` (a confirmation page) and ``POST /t/u/{token}`` (RFC 8058
one-click unsubscribe: no session, no CSRF token; the signed token is the proof).
"""

from __future__ import annotations

import html
from typing import Annotated, cast
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from postroom.errors import PostroomError
from postroom.tracking.context import tracking_context
from postroom.tracking.links import PIXEL, Links

router = APIRouter(prefix="/t", tags=["tracking links"], include_in_schema=False)

_NO_STORE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}


def _links(request: Request) -> Links:
    """The app's one :class:`Links` (made on first use: it holds nothing per request)."""
    state = request.app.state
    try:
        return cast(Links, state.links)
    except AttributeError:
        postroom = state.postroom
        ctx = tracking_context(state, postroom.settings)
        state.links = Links(postroom.engine, ctx, postroom.clock, postroom.link_events)
        return cast(Links, state.links)


async def get_links(request: Request) -> Links:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, on every request
    return _links(request)


LinksDep = Annotated[Links, Depends(get_links)]


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


# The pixel and the click are the busiest requests Postroom gets: plain Starlette
# routes (no dependencies or parameters for FastAPI to solve) and, in front of the
# router, :class:`FastLinks`.


async def _open(request: Request, token: str) -> Response:
    await _links(request).open(
        token.removesuffix(".gif"),
        request.headers.get("user-agent", ""),
        _ip(request),
        request.headers,
    )
    return Response(PIXEL, media_type="image/gif", headers=_NO_STORE)


async def _click(request: Request, token: str) -> Response:
    url = await _links(request).click(
        token,
        request.method,
        request.headers.get("user-agent", ""),
        _ip(request),
        request.headers,
    )
    return RedirectResponse(url, status_code=302, headers=_NO_STORE)


async def open_pixel(request: Request) -> Response:
    """``GET /t/o/{token}.gif``: record the open, answer a transparent GIF."""
    return await _open(request, request.path_params["token"])


async def click(request: Request) -> Response:
    """``GET|HEAD /t/c/{token}``: record the click, redirect to the URL it binds."""
    return await _click(request, request.path_params["token"])


_pixel_route = Route("/t/o/{token}", open_pixel, methods=["GET"], include_in_schema=False)
_pixel_route.methods = {"GET"}  # Starlette adds HEAD to a GET route; a pixel answers GET only
router.routes.append(_pixel_route)
router.add_route("/t/c/{token}", click, methods=["GET", "HEAD"], include_in_schema=False)

#: the pixel's answer, built once: the same headers as ``Response(PIXEL, …)``
_PIXEL_HEADERS: list[tuple[bytes, bytes]] = [
    *((k.lower().encode(), v.encode()) for k, v in _NO_STORE.items()),
    (b"content-length", str(len(PIXEL)).encode()),
    (b"content-type", b"image/gif"),
]
_PIXEL_START: Message = {"type": "http.response.start", "status": 200, "headers": _PIXEL_HEADERS}
_PIXEL_BODY: Message = {"type": "http.response.body", "body": PIXEL}
_REDIRECT_HEADERS: list[tuple[bytes, bytes]] = [
    *((k.lower().encode(), v.encode()) for k, v in _NO_STORE.items()),
    (b"content-length", b"0"),
]
_EMPTY_BODY: Message = {"type": "http.response.body", "body": b""}
#: the request headers the pixel and click read (the user agent, prefetch hints)
_WANTED = frozenset((b"user-agent", b"purpose", b"sec-purpose", b"x-moz"))


def _headers(scope: Scope) -> dict[str, str]:
    """The headers of :data:`_WANTED` (the first of each), read in one pass over the
    raw list instead of one scan per lookup."""
    out: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in _WANTED:
            out.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return out


class FastLinks:
    """Answers the pixel and click routes before the router and the per-request
    exception and dependency scopes, which cost more than the rest of such a
    request: headers read straight from the scope, the pixel's answer prebuilt. The
    same logic as the routes above; a :class:`PostroomError` is rendered by the
    app's own handler, anything else goes on to the app's server-error handler, as
    from a route. Install it inside the access log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            root: str = scope.get("root_path") or ""
            if root and path.startswith(root):
                path = path[len(root) :]
            prefix, token, method = path[:5], path[5:], scope["method"]
            if token and "/" not in token:
                if prefix == "/t/o/" and method == "GET":
                    await self._open(scope, receive, send, token.removesuffix(".gif"))
                    return
                if prefix == "/t/c/" and method in ("GET", "HEAD"):
                    await self._click(scope, receive, send, token)
                    return
        await self.app(scope, receive, send)

    async def _open(self, scope: Scope, receive: Receive, send: Send, token: str) -> None:
        headers = _headers(scope)
        client = scope.get("client")
        try:
            await _scope_links(scope).open(
                token, headers.get("user-agent", ""), client[0] if client else None, headers
            )
        except PostroomError as exc:
            await _render(scope, receive, send, exc)
            return
        await send(_PIXEL_START)
        await send(_PIXEL_BODY)

    async def _click(self, scope: Scope, receive: Receive, send: Send, token: str) -> None:
        headers = _headers(scope)
        client = scope.get("client")
        try:
            url = await _scope_links(scope).click(
                token,
                scope["method"],
                headers.get("user-agent", ""),
                client[0] if client else None,
                headers,
            )
        except PostroomError as exc:
            await _render(scope, receive, send, exc)
            return
        # the Location as Starlette's RedirectResponse writes it
        location = quote(url, safe=":/%#?=@[]!$&'()*+,;").encode("latin-1")
        start: Message = {
            "type": "http.response.start",
            "status": 302,
            "headers": [*_REDIRECT_HEADERS, (b"location", location)],
        }
        await send(start)
        await send(_EMPTY_BODY)


def _scope_links(scope: Scope) -> Links:
    state = scope["app"].state
    try:
        return cast(Links, state.links)
    except AttributeError:
        return _links(Request(scope))


async def _render(scope: Scope, receive: Receive, send: Send, exc: PostroomError) -> None:
    request = Request(scope, receive)
    response = await _rendered(scope, request, exc)
    await response(scope, receive, send)


async def _rendered(scope: Scope, request: Request, exc: PostroomError) -> Response:
    handlers = scope["app"].exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers:
            return cast(Response, await handlers[cls](request, exc))
    raise exc


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}}
button{{font-size:1rem;padding:.5rem 1rem}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""


@router.get("/u/{token}")
async def unsubscribe_page(token: str, links: LinksDep) -> HTMLResponse:
    """Asks for confirmation: a GET (a link scanner, a prefetch) never unsubscribes."""
    links.payload(token, "u")
    body = (
        "<p>Stop receiving marketing email at this address?</p>"
        f'<form method="post" action="{html.escape(token)}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return HTMLResponse(_PAGE.format(title="Unsubscribe", body=body), headers=_NO_STORE)


@router.post("/u/{token}")
async def unsubscribe(token: str, request: Request, links: LinksDep) -> HTMLResponse:
    """RFC 8058 one-click (``List-Unsubscribe=One-Click``) or the page's button."""
    body = (await request.body()).decode("utf-8", "replace")
    via = "one-click" if "List-Unsubscribe=One-Click" in body else "page"
    address = await links.unsubscribe(token, via=via)
    text = f"<p>{html.escape(address)} will receive no more marketing email from us.</p>"
    return HTMLResponse(_PAGE.format(title="Unsubscribed", body=text), headers=_NO_STORE)

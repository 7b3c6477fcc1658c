"""Email sending: ``POST /send`` and ``GET /status/{id}``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson
from fastapi import APIRouter, Depends, Request, Response
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from postroom.api.bodies import JSONRoute, is_json_media_type, json_object, parse_json
from postroom.api.deps import (
    CurrentKey,
    IdempotencyKey,
    PostroomDep,
    bearer_token,
    require,
    require_any,
)
from postroom.api.responses import ORJSONResponse
from postroom.app import Postroom
from postroom.errors import RequestInvalid, UnsupportedMediaType
from postroom.schemas.results import EmailSendResult, EmailStatus
from postroom.services.keys import KeyInfo
from postroom.services.status import ANY_OWNER
from postroom.types import ApiScope

router = APIRouter(tags=["email"], route_class=JSONRoute)

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


@router.post(
    "/send",
    status_code=202,
    response_model=EmailSendResult,
    dependencies=[Depends(require(ApiScope.SEND))],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/EmailRequest"}}
            },
        }
    },
    responses={401: _PROBLEM, 422: _PROBLEM},
)
async def send_email(
    request: Request,
    postroom: PostroomDep,
    key: CurrentKey,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Queue an email. ``202`` means it is stored durably and will be sent."""
    # :class:`FastSend` answers this route's requests ahead of the router; the route
    # stays for the OpenAPI document, and states the contract FastSend keeps.
    # The body is validated here rather than by FastAPI so that the size limit from the
    # settings takes part in validation and every problem is reported at once.
    data = await json_object(request)
    return await _accept(postroom, data, key, idempotency_key)


#: the JSON 202 as ``ORJSONResponse`` renders it, but for the body and its length
_CONTENT_TYPE = (b"content-type", b"application/json")
_WANTED = frozenset((b"authorization", b"content-type", b"idempotency-key"))


class FastSend:
    """Answers ``POST /send`` ahead of the router: the same checks in the same order as
    ``send_email`` (content type and JSON, the API key, its scope, the body's shape,
    validation), without the per-request exception, dependency and request scopes that
    cost more than the rest of the request. An exception is rendered by the app's own
    handler, as from a route; one it has no handler for goes on to the server-error
    handler. Install it inside the access log."""

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            root: str = scope.get("root_path") or ""
            if root and path.startswith(root):
                path = path[len(root) :]
            if path == self.path:
                await self._send(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _send(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await self._accept(scope, receive)
        except Exception as exc:
            handler = _handler(scope, exc)
            if handler is None:
                raise
            response = handler(Request(scope, receive), exc)
            if inspect.isawaitable(response):
                response = await response
            await response(scope, receive, send)
            return
        headers = [(b"content-length", str(len(body)).encode()), _CONTENT_TYPE]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _accept(self, scope: Scope, receive: Receive) -> bytes:
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in _WANTED:
                headers.setdefault(name, value)
        if not is_json_media_type(headers.get(b"content-type", b"").decode("latin-1")):
            raise UnsupportedMediaType()
        data = parse_json(await _body(receive))
        postroom: Postroom = scope["app"].state.postroom
        token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
        key = await postroom.keys.verify(token)
        key.require(ApiScope.SEND)
        if not isinstance(data, dict):
            raise RequestInvalid([{"field": "body", "message": "must be a JSON object"}])
        idempotency_key = headers.get(b"idempotency-key")
        result = await postroom.send(
            data,
            idempotency_key=None if idempotency_key is None else idempotency_key.decode("latin-1"),
            api_key_id=key.id,
        )
        return orjson.dumps(result.dump())


async def _body(receive: Receive) -> bytes:
    """The request body, as Starlette's ``Request.body`` reads it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()


_Handler = Callable[[Request, Exception], Awaitable[Response] | Response]


def _handler(scope: Scope, exc: Exception) -> _Handler | None:
    """The app's handler for ``exc`` as its exception middleware finds it (the most
    specific class; ``Exception`` itself is the server-error middleware's)."""
    handlers = scope["app"].exception_handlers
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return cast(_Handler, handlers[cls])
    return None


async def _accept(
    postroom: Postroom, data: dict[str, Any], key: KeyInfo, idempotency_key: str | None
) -> Response:
    result = await postroom.send(data, idempotency_key=idempotency_key, api_key_id=key.id)
    return ORJSONResponse(result.dump(), status_code=202)


@router.get(
    "/status/{email_id}",
    response_model=EmailStatus,
    response_model_by_alias=True,
    response_model_exclude_none=True,
    dependencies=[Depends(require_any(ApiScope.SEND, ApiScope.READ))],
    responses={401: _PROBLEM, 404: _PROBLEM},
)
async def email_status(email_id: str, postroom: PostroomDep, key: CurrentKey) -> EmailStatus:
    """The email's status, its recipients and every delivery attempt. A ``send``-scoped
    key sees only the mail it sent (another's is 404); ``read`` sees every email."""
    owner = ANY_OWNER if key.allows(ApiScope.READ) else key.id
    return await postroom.status(email_id, owner=owner)

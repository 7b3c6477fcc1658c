"""Request dependencies: the running Postroom and the caller's API key."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from postroom.app import Postroom
from postroom.errors import AuthError, ForbiddenError
from postroom.services.keys import KeyInfo
from postroom.services.sending import MAX_IDEMPOTENCY_KEY
from postroom.types import ApiScope


async def get_postroom(request: Request) -> Postroom:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, on every request
    return request.app.state.postroom  # type: ignore[no-any-return]


PostroomDep = Annotated[Postroom, Depends(get_postroom)]


def bearer_token(header: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; AuthError otherwise."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError()
    return token.strip()


async def current_key(request: Request, postroom: PostroomDep) -> KeyInfo:
    return await postroom.keys.verify(bearer_token(request.headers.get("authorization", "")))


CurrentKey = Annotated[KeyInfo, Depends(current_key)]


def require(scope: ApiScope) -> Callable[..., Coroutine[Any, Any, KeyInfo]]:
    """A dependency that admits keys with ``scope``."""

    async def _check(key: CurrentKey) -> KeyInfo:
        key.require(scope)
        return key

    return _check


def require_any(*scopes: ApiScope) -> Callable[..., Coroutine[Any, Any, KeyInfo]]:
    """A dependency that admits keys with at least one of ``scopes``."""

    async def _check(key: CurrentKey) -> KeyInfo:
        if not any(key.allows(scope) for scope in scopes):
            names = " or ".join(repr(s.value) for s in scopes)
            raise ForbiddenError(f"this API key needs the {names} scope")
        return key

    return _check


#: the ``Idempotency-Key`` header of the sending routes (``/send``, ``/send/raw``,
#: ``/template``, ``/bulk``): one declaration, so the document states one contract
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Makes retries safe: a repeat within 24 hours returns the first "
        "response; the same key with another body is 422. Scoped to the API key.",
        json_schema_extra={"minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY, "pattern": "\\S"},
    ),
]

"""JSON request bodies: one parser for every route that takes one.

FastAPI answers a body it cannot parse with an undocumented ``400`` (for example a
``RecursionError`` from JSON nested thousands deep) and lets any content type
through to validation. Routes of :class:`JSONRoute` instead refuse a non-JSON
content type with ``415`` and a body that is not JSON, nested deeper than ``MAX_DEPTH``, or
holding a NUL character, with ``422``, before FastAPI (or the route) reads it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute

from postroom.errors import RequestInvalid, UnsupportedMediaType
from postroom.gcpause import gc_paused

#: deeper JSON is refused: no request of Postroom's needs more, and deep data costs
#: recursion everywhere it is handled later
MAX_DEPTH = 32
#: bodies from this size on are parsed and handled with the cyclic GC paused
LARGE_BODY = 1 << 20


def is_json_media_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    maintype, _, subtype = media.partition("/")
    return maintype == "application" and (subtype == "json" or subtype.endswith("+json"))


def _shape(value: Any) -> tuple[int, str | None]:
    """How deep containers nest in ``value``, and the path of the first string or key
    that holds NUL, if any (iteratively: no recursion to exhaust)."""
    deepest, nul = 0, None
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            if nul is None and "\x00" in item:
                nul = path or "body"
            continue
        children: list[tuple[Any, str]] = []
        if isinstance(item, dict):
            for key, child in item.items():
                where = f"{path}.{key}" if path else str(key)
                if nul is None and "\x00" in key:
                    nul = path or "body"
                children.append((child, where))
        elif isinstance(item, list):
            children = [(child, f"{path}.{n}" if path else str(n)) for n, child in enumerate(item)]
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1, where) for child, where in reversed(children))
    return deepest, nul


def _depth(value: Any) -> int:
    """``_shape``'s depth alone, level by level over containers only (no paths): the
    cheap check for a body that cannot hold NUL."""
    containers = (dict, list)
    level = [value] if type(value) in containers else []
    depth = 0
    while level and depth <= MAX_DEPTH:
        depth += 1
        below: list[Any] = []
        for item in level:
            values = item.values() if type(item) is dict else item
            below.extend(v for v in values if type(v) in containers)
        level = below
    return depth


def parse_json(body: bytes) -> Any:
    """The body as JSON; RequestInvalid (422) says why it is not acceptable."""
    too_deep = f"JSON is nested more than {MAX_DEPTH} levels deep"
    try:
        # orjson is fast and strict; what it refuses (a lone surrogate, which validation
        # then reports per field, or nesting past its limit) the standard parser decides
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            data = json.loads(body)
        except RecursionError:
            raise RequestInvalid([{"field": "body", "message": too_deep}]) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            problem = {"field": "body", "message": f"not valid JSON: {exc}"}
            raise RequestInvalid([problem]) from None
    # both parsers refuse raw control characters in strings: a NUL is "\u0000" or absent
    depth, nul = _shape(data) if b"\\u0000" in body else (_depth(data), None)
    if nul is not None:  # PostgreSQL stores no NUL in text or JSON: refused everywhere
        message = "must not contain NUL characters (\\u0000)"
        raise RequestInvalid([{"field": nul.replace("\x00", "\\u0000"), "message": message}])
    if depth > MAX_DEPTH:
        raise RequestInvalid([{"field": "body", "message": too_deep}])
    return data


def takes_json(route: APIRoute) -> bool:
    """A route with a body: a model parameter, or one it documents and parses itself."""
    extra = route.openapi_extra or {}
    return route.body_field is not None or "requestBody" in extra


_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


class JSONRoute(APIRoute):
    """An APIRoute that checks its JSON body first, and documents 415 and 422."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if takes_json(self):
            for status in (415, 422):
                self.responses.setdefault(status, _PROBLEM)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not takes_json(self):
            return handler

        optional = self.body_field is not None and not self.body_field.field_info.is_required()

        async def parse_then_handle(request: Request) -> Response:
            if optional and not await request.body():
                return await handler(request)  # an optional body left out
            if not is_json_media_type(request.headers.get("content-type", "")):
                raise UnsupportedMediaType()
            body = await request.body()
            if len(body) < LARGE_BODY:
                # Starlette caches the parsed body here; FastAPI's request.json() reuses it
                request._json = parse_json(body)
                return await handler(request)
            with gc_paused():  # a large body makes millions of objects (see gcpause)
                request._json = parse_json(body)
                return await handler(request)

        return parse_then_handle


async def json_object(request: Request) -> dict[str, Any]:
    """The body a ``JSONRoute`` parsed and checked, which must be an object."""
    data: Any = await request.json()
    if not isinstance(data, dict):
        raise RequestInvalid([{"field": "body", "message": "must be a JSON object"}])
    return data

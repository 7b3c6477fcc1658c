"""Every error leaves the API as ``application/problem+json`` (RFC 9457), never a traceback."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from postroom.api import dbfailure
from postroom.app import validation_errors
from postroom.errors import AuthError, PostroomError, RequestInvalid

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:postroom:problem:"


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    from http import HTTPStatus

    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = {"type": TYPE_PREFIX + code, "title": title, "status": status, "detail": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _unavailable(failure: dbfailure.Failure, exc: Exception) -> JSONResponse:
    """The database cannot serve the request: nothing was accepted, so say "retry"."""
    log.error("database unavailable: %s: %s", type(exc).__name__, failure.reason, exc_info=exc)
    return problem(
        failure.http_status,
        failure.code,
        f"{failure.summary} ({failure.reason}); nothing was accepted, please retry",
        headers={"Retry-After": str(failure.retry_after_s)},
    )


def _allowed(request: Request) -> str:
    """Every method the document gives the path. Starlette names only the first route
    that matched it, but FastAPI makes one route per method."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {m.upper() for m in operations if m.upper() in _METHODS}
    return ", ".join(sorted(methods))


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


def install(app: FastAPI) -> None:
    @app.exception_handler(PostroomError)
    async def _postroom(_request: Request, exc: PostroomError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if type(exc) is AuthError else None
        errors = exc.errors if isinstance(exc, RequestInvalid) else None
        if errors is None and "field" in exc.context:
            errors = [{"field": exc.context["field"], "message": exc.message}]
        if exc.http_status >= 500:
            log.error("request failed: %s", exc.message)
        return problem(exc.http_status, exc.code, exc.message, headers=headers, errors=errors)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(p) for p in e["loc"] if p != "body") or "body",
                "message": str(e["msg"]).removeprefix("Value error, "),
            }
            for e in exc.errors()
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "invalid-request", f"the request is invalid: {summary}", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http")
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed(request)}
        return problem(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(OSError)
    async def _database(_request: Request, exc: Exception) -> JSONResponse:
        failure = dbfailure.classify(exc)
        if failure is None:  # a bad query or another bug: not the database's state
            log.exception("unhandled database error", exc_info=exc)
            return problem(500, "internal", "an internal error occurred; it has been logged")
        return _unavailable(failure, exc)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        failure = dbfailure.classify(exc)  # a driver error that arrived unwrapped
        if failure is not None:
            return _unavailable(failure, exc)
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "internal", "an internal error occurred; it has been logged")


__all__ = ["PROBLEM_JSON", "install", "problem", "validation_errors"]

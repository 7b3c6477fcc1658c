"""The access log: one INFO line per HTTP request on the ``postroom.access`` logger.

Fields: method, path (no query string: it may carry tokens), status, duration in
milliseconds and the API key's public prefix (``pr_1a2b3c4d``; never the secret part,
``-`` without a key). A pure ASGI middleware, so it times the whole request and sees
the status that was actually sent, also for errors rendered by the problem handlers.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from postroom.logs import fields

log = logging.getLogger("postroom.access")


def key_prefix(authorization: str) -> str:
    """``pr_1a2b3c4d`` from ``Bearer pr_1a2b3c4d_<secret>``; ``-`` for no key, ``?`` for junk."""
    if not authorization:
        return "-"
    token = authorization.removeprefix("Bearer ").strip()
    parts = token.split("_", 2)
    if len(parts) == 3 and parts[0] == "pr" and len(parts[1]) == 8 and parts[1].isalnum():
        return f"pr_{parts[1]}"
    return "?"


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            if log.isEnabledFor(logging.INFO):
                headers = dict(scope.get("headers") or ())
                key = key_prefix(headers.get(b"authorization", b"").decode("latin-1"))
                method, path = scope["method"], scope["path"]
                ms = round((time.perf_counter() - started) * 1000, 1)
                log.info(
                    "%s %s %d %.1f ms key=%s",
                    method,
                    path,
                    status,
                    ms,
                    key,
                    extra=fields(method=method, path=path, status=status, duration_ms=ms, key=key),
                )

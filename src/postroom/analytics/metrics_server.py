"""``/metrics`` on a listener of its own, readable without an API key.

Prometheus scrapes are simple GETs, so this is a small asyncio HTTP/1.1 server
(one request per connection) rather than a second ASGI server in the process:
no routes, no auth, no body parsing. It answers ``GET /metrics`` (and ``HEAD``)
with the same text the API's ``/metrics`` renders, 404 for other paths and 405
for other methods. Bind it to a private interface: it is meant for the scraper.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING

from postroom.analytics import metrics

if TYPE_CHECKING:
    from postroom.app import Postroom

log = logging.getLogger(__name__)

#: a scrape's request line and headers must arrive within this many seconds
READ_TIMEOUT_S = 10.0
MAX_HEAD_BYTES = 16_384


class MetricsServer:
    """Serves ``/metrics`` of ``postroom`` on a listening socket until closed."""

    def __init__(self, postroom: Postroom, sock: socket.socket) -> None:
        self.postroom = postroom
        self.sock = sock
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> MetricsServer:
        self._server = await asyncio.start_server(self._handle, sock=self.sock)
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            await self._answer(head, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass  # a client that went away or sent no request: nothing to answer
        except ConnectionError:
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass

    async def _answer(self, head: bytes, writer: asyncio.StreamWriter) -> None:
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return _reply(writer, 400, b"bad request\n")
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if target != b"/metrics":
            return _reply(writer, 404, b"not found: scrape /metrics\n")
        if method not in (b"GET", b"HEAD"):
            return _reply(writer, 405, b"method not allowed\n", extra=b"Allow: GET, HEAD\r\n")
        try:
            body = await metrics.render(self.postroom.engine, self.postroom.clock.now())
        except Exception:
            log.exception("metrics: rendering failed")
            return _reply(writer, 503, b"metrics are unavailable: see the server log\n")
        _reply(writer, 200, body, content_type=metrics.CONTENT_TYPE, head_only=method == b"HEAD")
        await writer.drain()


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


def _reply(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    *,
    content_type: str = "text/plain; charset=utf-8",
    extra: bytes = b"",
    head_only: bool = False,
) -> None:
    reason = _REASONS.get(status, "Service Unavailable")
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n".encode()
        + extra
        + b"\r\n"
        + (b"" if head_only else body)
    )

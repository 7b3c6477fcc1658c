"""The relay's DATA phase answers as aiosmtpd's own does, byte stream for byte stream.

The same wire bytes go to a stock aiosmtpd server and to the relay; the replies
must match, and what the relay stores must be what aiosmtpd handed its handler.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import Table, select

from postroom.app import Postroom
from postroom.config import SmtpSettings
from postroom.db.models import EmailJob
from postroom.relay.server import Relay

jobs_t = cast(Table, EmailJob.__table__)
LIMIT = 4096
HEAD = (
    b"From: app@example.com\r\nTo: ann@example.com\r\nSubject: parity\r\n"
    b"Message-ID: <p@example.com>\r\nDate: Thu, 01 Jan 2026 12:00:00 +0000\r\n\r\n"
)


class _Keep:
    def __init__(self) -> None:
        self.content: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.content.append(envelope.original_content or b"")
        return "250 OK"


async def _reply(reader: asyncio.StreamReader) -> str:
    lines = []
    while True:
        line = (await reader.readline()).decode()
        lines.append(line.rstrip("\r\n"))
        if line[3:4] != "-":
            return lines[-1]


async def _send(port: int, wire: bytes) -> str:
    """EHLO, MAIL, RCPT, DATA, then ``wire`` as it is; the reply to it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await _reply(reader)
        for command in (b"EHLO client", b"MAIL FROM:<app@example.com>", b"RCPT TO:<a@b.example>"):
            writer.write(command + b"\r\n")
            assert (await _reply(reader))[:1] == "2"
        writer.write(b"DATA\r\n")
        assert (await _reply(reader)).startswith("354")
        writer.write(wire)
        answer = await _reply(reader)
        writer.write(b"NOOP\r\n")  # the session is still in step
        assert (await _reply(reader)).startswith("250")
        return answer
    finally:
        writer.close()


@pytest.fixture
async def servers(postroom: Postroom) -> AsyncIterator[tuple[int, int, _Keep]]:
    keep = _Keep()
    loop = asyncio.get_running_loop()
    stock = await loop.create_server(
        lambda: SMTP(keep, data_size_limit=LIMIT, enable_SMTPUTF8=True, decode_data=False),
        "127.0.0.1",
        0,
    )
    postroom.settings.max_message_bytes = LIMIT
    settings = SmtpSettings(trusted_networks=["127.0.0.0/8"], rate_limit_per_minute=0)
    relay = await Relay(postroom, settings).start(0)
    try:
        yield stock.sockets[0].getsockname()[1], relay.addresses[0][1], keep
    finally:
        await relay.aclose()
        stock.close()


def _lines(*lines: bytes) -> bytes:
    return HEAD + b"".join(line + b"\r\n" for line in lines)


def _filled(size: int) -> bytes:
    """The head and lines of about 70 bytes, ``size`` bytes in all."""
    lines = (size - len(HEAD)) // 70 - 1
    last = size - len(HEAD) - 70 * lines
    return HEAD + (b"y" * 68 + b"\r\n") * lines + b"y" * (last - 2) + b"\r\n"


#: name: (aiosmtpd's reply code, the bytes after DATA)
WIRES: dict[str, tuple[int, bytes]] = {
    "plain": (250, _lines(b"hello", b"bye") + b".\r\n"),
    "dots": (250, _lines(b"..leading dot", b"a sentence.", b"..", b"", b"...") + b".\r\n"),
    "empty last line": (250, _lines(b"x", b"") + b".\r\n"),
    "999-byte line": (250, _lines(b"a" * 999) + b".\r\n"),
    "1000-byte line": (500, _lines(b"a" * 1000) + b".\r\n"),
    "1002-byte line": (500, _lines(b"a" * 1002) + b".\r\n"),
    "stuffed 999 bytes": (250, _lines(b"." + b"a" * 998) + b".\r\n"),
    "stuffed 1000 bytes": (500, _lines(b"." + b"a" * 999) + b".\r\n"),
    "at the size limit": (250, _filled(LIMIT) + b".\r\n"),
    "one byte over": (552, _filled(LIMIT + 1) + b".\r\n"),
    "far over": (552, _lines(*[b"z" * 70] * 500) + b".\r\n"),
    "over, then a long line": (552, _lines(*[b"z" * 70] * 60, b"q" * 2000) + b".\r\n"),
    "long line, then over": (500, _lines(b"q" * 2000, *[b"z" * 70] * 60) + b".\r\n"),
    "no line end past the limit": (500, HEAD + b"w" * (3 * LIMIT) + b"\r\n.\r\n"),
}


@pytest.mark.parametrize("name", list(WIRES))
async def test_same_reply_and_content_as_aiosmtpd(
    postroom: Postroom, servers: tuple[int, int, _Keep], name: str
) -> None:
    stock_port, relay_port, keep = servers
    code, wire = WIRES[name]
    expected = await _send(stock_port, wire)
    assert expected.startswith(str(code)), expected
    got = await _send(relay_port, wire)
    if expected.startswith("250"):
        assert got.startswith("250 2.0.0 Ok: queued as"), (name, got)
        async with postroom.engine.connect() as conn:
            data: dict[str, Any] = (await conn.execute(select(jobs_t.c.data))).scalar_one()
        assert base64.b64decode(data["raw"]["mime"]) == keep.content[0]
    else:
        assert got == expected, name

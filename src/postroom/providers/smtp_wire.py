"""One pooled SMTP connection after its handshake: commands written as bytes, replies
read in order, and pipelined transactions (RFC 2920).

aiosmtplib opens the connection (greeting, EHLO, STARTTLS, AUTH); then this protocol
takes over its transport. aiosmtplib reads one reply per command and drops data
that arrives while no command waits, so it cannot pipeline: with PIPELINING, MAIL,
every RCPT and DATA go out in one write and their replies come back together. Here
every reply is kept until it is read, so a transaction costs two round trips
instead of three plus one per recipient. Each reply is still read and classified on
its own, exactly as in lockstep.
"""

from __future__ import annotations

import asyncio
from collections import deque

from aiosmtplib import (
    SMTPDataError,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)
from aiosmtplib.protocol import normalize_message_line_endings

#: longest reply line and reply accepted (aiosmtplib's limits)
MAX_LINE = 8192
MAX_REPLY = MAX_LINE * 4


class Stale(Exception):
    """A reused connection had been dropped by the server before MAIL: nothing was
    sent, so the message may go out on a fresh connection."""


def data_payload(mime: bytes) -> bytes:
    """``mime`` as DATA content: CRLF line ends, dot-stuffed, with the ending line.

    What aiosmtplib does to every message with two regular-expression passes; a
    message Postroom composed is already CRLF throughout, which three byte counts
    confirm, and rarely has a line starting with a dot.
    """
    crlf = mime.count(b"\r\n")
    if mime.count(b"\n") != crlf or mime.count(b"\r") != crlf:
        mime = normalize_message_line_endings(mime)
    elif not mime.endswith(b"\r\n"):
        mime += b"\r\n"
    if mime.startswith(b"."):
        mime = b"." + mime
    if b"\n." in mime:
        mime = mime.replace(b"\n.", b"\n..")
    return mime + b".\r\n"


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(SMTPReadTimeoutError("Timed out waiting for server response"))


class Wire(asyncio.Protocol):
    """The connection's protocol from the handshake on: keeps every reply until read."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self._transport: asyncio.WriteTransport = transport  # type: ignore[assignment]
        self._buffer = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None
        transport.set_protocol(self)

    @property
    def is_connected(self) -> bool:
        return self._error is None and not self._transport.is_closing()

    # -- asyncio.Protocol ---------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            self._parse()
        except SMTPResponseException as exc:
            self._fail(exc)
            self._transport.close()
        self._wake()

    def eof_received(self) -> bool:
        self._fail(SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        error = SMTPServerDisconnected("Connection lost")
        error.__cause__ = exc
        self._fail(error)

    def _fail(self, exc: Exception) -> None:
        if self._error is None:
            self._error = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _parse(self) -> None:
        """Move every complete reply out of the buffer."""
        buffer = self._buffer
        while True:
            offset, lines, code = 0, [], -1
            while True:
                end = buffer.find(b"\n", offset)
                if end == -1:
                    if len(buffer) > MAX_REPLY:
                        raise SMTPResponseException(500, "Response too long")
                    return
                line = bytes(buffer[offset : end + 1])
                if len(line) > MAX_LINE:
                    raise SMTPResponseException(500, "Response too long")
                try:
                    code = int(line[:3])
                except ValueError:
                    text = line.decode("utf-8", errors="ignore")
                    raise SMTPResponseException(
                        500, f"Malformed SMTP response line: {text}"
                    ) from None
                offset = end + 1
                lines.append(line[4:].strip(b" \t\r\n"))
                if line[3:4] != b"-":
                    break
            del buffer[:offset]
            text = b"\n".join(lines).decode("utf-8", "surrogateescape")
            self._replies.append(SMTPResponse(code, text))

    # -- commands -----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._error is not None or self._transport.is_closing():
            raise SMTPServerDisconnected("Connection lost")
        self._transport.write(data)

    async def reply(self, timeout: float | None) -> SMTPResponse:
        """The next reply, in the order the commands were written.

        The wait is bounded by a plain timer on the loop rather than ``asyncio.timeout``,
        whose context costs several times more, twice a message.
        """
        while not self._replies:
            if self._error is not None:
                raise self._error
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        return self._replies.popleft()

    async def command(self, line: bytes, timeout: float | None) -> SMTPResponse:
        self.write(line + b"\r\n")
        return await self.reply(timeout)

    async def transaction(
        self,
        mail: bytes,
        recipients: list[tuple[str, bytes]],
        payload: bytes,
        *,
        pipelining: bool,
        reused: bool,
        timeout: float | None,
    ) -> tuple[SMTPResponse, list[SMTPRecipientRefused]]:
        """MAIL, RCPT for each recipient, DATA and the payload (from ``data_payload``):
        the final reply and the refused recipients.

        Raises SMTPSenderRefused, SMTPDataError, or a disconnect or timeout; ``Stale``
        when a ``reused`` connection turns out closed (a drop or 421 answering MAIL).
        With all recipients refused it returns before DATA's content, having sent
        nothing.
        A refusal is raised only once every reply written for has been read, so the
        connection stays in step and may be RSET and reused.
        """
        rcpt = [b"RCPT TO:<" + address + b">\r\n" for _, address in recipients]
        refused: list[SMTPRecipientRefused] = []
        if pipelining:
            sender = await self._mail(
                b"".join([mail + b"\r\n", *rcpt, b"DATA\r\n"]), reused, timeout
            )
            for (name, _), _line in zip(recipients, rcpt, strict=True):
                reply = await self.reply(timeout)
                if reply.code not in (250, 251):
                    refused.append(SMTPRecipientRefused(reply.code, reply.message, name))
            start = await self.reply(timeout)
            if sender.code != 250 or len(refused) == len(recipients):
                if start.code == 354:  # accepted anyway: end it with no content
                    await self.command(b".", timeout)
                if sender.code != 250:
                    raise SMTPSenderRefused(sender.code, sender.message, "")
                return start, refused
        else:
            sender = await self._mail(mail + b"\r\n", reused, timeout)
            if sender.code != 250:
                raise SMTPSenderRefused(sender.code, sender.message, "")
            for (name, _), line in zip(recipients, rcpt, strict=True):
                self.write(line)
                reply = await self.reply(timeout)
                if reply.code not in (250, 251):
                    refused.append(SMTPRecipientRefused(reply.code, reply.message, name))
            if len(refused) == len(recipients):
                return sender, refused
            start = await self.command(b"DATA", timeout)
        if start.code != 354:
            raise SMTPDataError(start.code, start.message)
        self.write(payload)
        final = await self.reply(timeout)
        if final.code != 250:
            raise SMTPDataError(final.code, final.message)
        return final, refused

    async def _mail(self, data: bytes, reused: bool, timeout: float | None) -> SMTPResponse:
        """Write ``data`` (MAIL first) and read MAIL's reply; a 421 ends the session."""
        try:
            self.write(data)
            reply = await self.reply(timeout)
        except SMTPServerDisconnected as exc:
            if reused:
                raise Stale from exc
            raise
        if reply.code == 421:
            error = SMTPSenderRefused(reply.code, reply.message, "")
            if reused:
                raise Stale from error
            raise error
        return reply

    def close(self) -> None:
        self._transport.close()

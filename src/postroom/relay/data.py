"""The DATA phase read in large pieces instead of line by line.

aiosmtpd reads message content one ``readuntil(b"\\r\\n")`` per line, with a
Python loop iteration and several allocations for each: at thousands of messages
a second that was most of the relay's CPU. Here the stream is read up to each
``".\\r\\n"`` (a line ending in a dot, or the end-of-data line), which for most
messages is one read, and the transparency dots are removed with one
``bytes.replace``. It never reads past the end-of-data line, so whatever follows
stays in the stream for the command loop.

The outcomes are aiosmtpd's: content over ``size_limit`` bytes (counted as
aiosmtpd counts them: every line as received, the final ``.`` excluded) is read
to its end and refused with ``552``, a line longer than ``line_limit`` bytes
(CRLF and transparency dot included) with ``500``; neither keeps the data in
memory once detected.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

CRLF = b"\r\n"
#: the end-of-data line, with the CRLF of the line before it
END = b"\r\n.\r\n"
TOO_MUCH = "552 Error: Too much mail data"
TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"


class _State(enum.Enum):
    NOMINAL = enum.auto()
    TOO_MUCH = enum.auto()
    TOO_LONG = enum.auto()


@dataclass(frozen=True, slots=True)
class Data:
    """What a DATA phase delivered: the content, or the reply refusing it."""

    content: bytes | None
    refusal: str | None = None


async def read(reader: asyncio.StreamReader, *, size_limit: int, line_limit: int) -> Data:
    """Read content up to the end-of-data line and undo dot-stuffing (RFC 5321 4.5.2).

    The reader's stream limit must be above ``size_limit`` + 3, so that a message
    within the size limit never overruns it.
    """
    pieces: list[bytes] = []
    received = 0
    state = _State.NOMINAL
    #: the last two bytes before the next read: a line starts after CRLF
    before = CRLF
    while True:
        try:
            piece = await reader.readuntil(b".\r\n")
        except asyncio.LimitOverrunError as exc:
            # more bytes than the stream limit without a line ending in a dot: over the
            # size limit, unless a line in them is too long first; drop them, read on
            piece = await reader.read(exc.consumed)
            if state is _State.NOMINAL:
                state = _overrun(piece, received, size_limit, line_limit)
            pieces.clear()
            before = (before + piece)[-2:]
            continue
        ended = (before + piece[-5:])[-5:] == END
        body = piece[:-3] if ended else piece
        before = (before + piece)[-2:]
        if state is _State.NOMINAL:
            state = _check(body, received, size_limit, line_limit)
            if state is _State.NOMINAL:
                pieces.append(body)
            else:
                pieces.clear()
        received += len(body)
        if ended:
            break
    if state is _State.TOO_MUCH:
        return Data(None, TOO_MUCH)
    if state is _State.TOO_LONG:
        return Data(None, TOO_LONG)
    content = b"".join(pieces)
    if content[:1] == b".":
        content = content[1:]
    return Data(content.replace(b"\r\n.", CRLF))


def _overrun(piece: bytes, received: int, size_limit: int, line_limit: int) -> _State:
    """The state after ``piece``, which starts a line and is over the size limit."""
    cut = piece.rfind(CRLF)
    whole = piece[: cut + 2] if cut >= 0 else b""
    state = _check(whole, received, size_limit, line_limit)
    if state is _State.NOMINAL:
        return _State.TOO_LONG if len(piece) - len(whole) > line_limit else _State.TOO_MUCH
    return state


def _check(body: bytes, received: int, size_limit: int, line_limit: int) -> _State:
    """The state after ``body`` (whole lines, or empty), as aiosmtpd's line loop would
    reach it."""
    if received + len(body) <= size_limit and (
        len(body) <= line_limit or max(map(len, body.split(CRLF))) <= line_limit - 2
    ):
        return _State.NOMINAL  # the common case, checked without a loop in Python
    total = received
    for line in body.split(CRLF)[:-1]:  # ``body`` ends with CRLF
        size = len(line) + 2
        total += size
        # aiosmtpd counts a line's bytes first, except for lines past the stream
        # limit, which it refuses as too long before counting them
        if size > line_limit + 2:
            return _State.TOO_LONG
        if total > size_limit:
            return _State.TOO_MUCH
        if size > line_limit:
            return _State.TOO_LONG
    return _State.NOMINAL

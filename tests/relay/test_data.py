"""The DATA reader: content, transparency dots, limits, and what it leaves in the stream."""

from __future__ import annotations

import asyncio

import pytest

from postroom.relay import data

LIMIT = 4096
LINE = 1001  # aiosmtpd's line_length_limit


async def read(raw: bytes, *, pieces: int = 1, size_limit: int = LIMIT) -> tuple[data.Data, bytes]:
    """Feed ``raw`` in ``pieces`` parts; what ``data.read`` returned and what it left."""
    reader = asyncio.StreamReader(limit=size_limit + 8)
    step = max(1, -(-len(raw) // pieces))

    async def feed() -> None:
        for start in range(0, len(raw), step):
            reader.feed_data(raw[start : start + step])
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    got = await data.read(reader, size_limit=size_limit, line_limit=LINE)
    await feeder
    return got, await reader.read()


@pytest.mark.parametrize("pieces", [1, 3, 10_000])
async def test_content_and_transparency_dots(pieces: int) -> None:
    raw = (
        b".starts with a dot\r\n"
        b"a sentence.\r\n"
        b"..\r\n"
        b"...two dots stay one less\r\n"
        b"\r\n"
        b"last.\r\n"
        b".\r\n"
        b"QUIT\r\n"
    )
    got, left = await read(raw, pieces=pieces)
    assert got == data.Data(
        b"starts with a dot\r\na sentence.\r\n.\r\n..two dots stay one less\r\n\r\nlast.\r\n"
    )
    assert left == b"QUIT\r\n"


@pytest.mark.parametrize(
    ("raw", "content"),
    [
        (b".\r\n", b""),
        (b"\r\n.\r\n", b"\r\n"),
        (b"x\r\n.\r\n", b"x\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"a.\r\n.\r\n", b"a.\r\n"),
        (b"a\r\n..\r\n.\r\n", b"a\r\n.\r\n"),
    ],
)
async def test_short_messages(raw: bytes, content: bytes) -> None:
    for pieces in (1, len(raw)):
        got, left = await read(raw + b"NOOP\r\n", pieces=pieces)
        assert got == data.Data(content)
        assert left == b"NOOP\r\n"


async def test_size_limit_counts_lines_as_received() -> None:
    line = b"y" * 62 + b"\r\n"  # 64 bytes
    exact = line * (LIMIT // 64)
    got, _ = await read(exact + b".\r\n")
    assert got == data.Data(exact)
    got, left = await read(exact + b"z\r\n.\r\nRSET\r\n")
    assert got == data.Data(None, data.TOO_MUCH)
    assert left == b"RSET\r\n"


async def test_far_over_the_stream_limit_is_read_to_the_end_and_refused() -> None:
    raw = b"x" * 998 + b"\r\n"
    got, left = await read(raw * 50 + b".\r\nRSET\r\n", pieces=7)
    assert got == data.Data(None, data.TOO_MUCH)
    assert left == b"RSET\r\n"
    # no CRLF for longer than the limit: one line, too long
    got, left = await read(b"x" * (3 * LIMIT) + b"\r\n.\r\nRSET\r\n", pieces=5)
    assert got == data.Data(None, data.TOO_LONG)
    assert left == b"RSET\r\n"


async def test_line_length_as_aiosmtpd() -> None:
    longest = b"a" * (LINE - 2) + b"\r\n"  # 999 bytes and CRLF: allowed
    got, _ = await read(longest + b".\r\n")
    assert got == data.Data(longest)
    got, left = await read(b"ok\r\n" + b"a" * (LINE - 1) + b"\r\nmore\r\n.\r\nQUIT\r\n")
    assert got == data.Data(None, data.TOO_LONG)
    assert left == b"QUIT\r\n"
    # the transparency dot counts: 998 bytes of text after it, as RFC 5321 allows
    got, _ = await read(b"." + longest + b".\r\n")
    assert got.refusal == data.TOO_LONG
    got, _ = await read(b".." + longest[2:] + b".\r\n")
    assert got == data.Data(b"." + longest[2:])


async def test_first_problem_decides() -> None:
    line = b"y" * 62 + b"\r\n"
    too_long = b"a" * 1500 + b"\r\n"
    got, _ = await read(too_long + line * 80 + b".\r\n")
    assert got.refusal == data.TOO_LONG
    got, _ = await read(line * 80 + too_long + b".\r\n")
    assert got.refusal == data.TOO_MUCH

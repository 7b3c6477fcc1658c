"""A local HTTP receiver for the benchmarks: answers every request with 204, counts them.

::

    with Receiver() as receiver:     # a process on a free port of 127.0.0.1
        post_to(receiver.url)
        receiver.count               # requests answered so far

HTTP/1.1 with keep-alive, in its own process (started with ``spawn``), so its CPU is
not the benchmark process's.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from multiprocessing.sharedctypes import Synchronized


async def _answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: Synchronized[int]
) -> None:
    """HTTP/1.1 with keep-alive: read each request's head and body, answer 204."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            with count.get_lock():
                count.value += 1
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _receive(port: Synchronized[int], count: Synchronized[int]) -> None:
    async def serve() -> None:
        server = await asyncio.start_server(
            lambda r, w: _answer(r, w, count), "127.0.0.1", 0, backlog=256
        )
        port.value = server.sockets[0].getsockname()[1]
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


class Receiver:
    """A process on a free port of 127.0.0.1 that counts the POSTs it answers."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._port: Synchronized[int] = context.Value("i", 0)
        self._count: Synchronized[int] = context.Value("i", 0)
        self._process = context.Process(target=_receive, args=(self._port, self._count))

    def __enter__(self) -> Receiver:
        self._process.start()
        deadline = time.monotonic() + 30
        while not self._port.value:
            if time.monotonic() > deadline or not self._process.is_alive():
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self._process.kill()
        self._process.join()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port.value}/hooks"

    @property
    def count(self) -> int:
        return int(self._count.value)

    def reset(self) -> None:
        with self._count.get_lock():
            self._count.value = 0

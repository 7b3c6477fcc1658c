"""DKIM signing in helper processes, so a worker keeps sending meanwhile.

An RSA-2048 signature costs a quarter to a third of a millisecond of CPU, and
canonicalizing and hashing the message a fifth of that again. In one worker process
that was half of what a plain message costs. The signature alone could run in a
thread (the ``cryptography`` package releases the GIL for it), but the
canonicalization and the hand-over to and from the thread stay on the worker's GIL:
measured, a thread made templated delivery cost 43-49 % of plain throughput, a
helper process 25-31 %. Here the worker hands the finished message to one of
``processes`` children (``python -m postroom.compose.signer``), each of which has
the key loaded once (sent the first time it is used), runs ``dkim.prepare_rsa``
and the RSA operation and answers with the ``DKIM-Signature`` header: the same
bytes the worker would have made (PKCS#1 v1.5 is deterministic). Copying a few
kilobytes through a pipe costs the worker far less than either step.

Whatever keeps a child from answering (it cannot start, it dies, it does not answer
within :data:`SIGN_TIMEOUT_S`, when it is killed) is logged once,
and the message is signed in the worker instead, as is anything the child does
not sign (an Ed25519 key, a message outside ``prepare_rsa``'s plain case, an
error, which ``dkim.sign`` then reports): signing never fails because of this.

Frames, each a type byte and a 4-byte length: to the child ``K`` + key id +
domain NUL selector NUL PEM (load a key), ``M`` + key id + message (sign it);
from the child ``R`` once (ready), then for each ``M`` in order ``+`` + header or
``-`` + why not.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import logging
import os
import struct
import sys

from postroom.compose import dkim

log = logging.getLogger(__name__)

_HEAD = struct.Struct(">cI")
_READY = _HEAD.pack(b"R", 0)
#: how long a child may take to import what it needs and say so
START_TIMEOUT_S = 30.0
#: how long a message may wait for its signature before the child is taken for stuck
#: (a signature takes under a millisecond; a child stopped or starved never answers)
SIGN_TIMEOUT_S = 10.0


class SignerUnavailable(Exception):
    """The child did not sign: it is gone (``gone``), or it declined the message."""

    def __init__(self, why: str, *, gone: bool) -> None:
        super().__init__(why)
        self.gone = gone


@functools.lru_cache(maxsize=64)  # the same key signs message after message
def _key_frame(key: dkim.SigningKey) -> tuple[bytes, bytes]:
    """The key's id (a hash of everything that makes it) and its ``K`` payload."""
    spec = b"\0".join([key.domain.encode(), key.selector.encode(), key.private_key])
    key_id = hashlib.sha256(spec).digest()
    return key_id, key_id + spec


class _Child:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.keys: set[bytes] = set()
        #: each message sent and not answered yet: its future and when it is overdue
        self.waiting: collections.deque[tuple[asyncio.Future[bytes], float]] = collections.deque()
        #: one timer for the oldest message (not one per message: the worker's CPU)
        self._watch: asyncio.TimerHandle | None = None
        #: frames not written yet: a batch of sends is one write and one wake-up
        self._out: list[bytes] = []
        self.alive = True
        self.reader = asyncio.create_task(self._read())

    @property
    def open(self) -> bool:
        return self.alive and self.proc.stdin is not None and not self.proc.stdin.is_closing()

    async def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        buffer = b""
        try:
            while data := await out.read(1 << 16):
                # whatever answers have arrived, at once: one wake-up for several
                frames, buffer = _frames(buffer + data)
                for status, payload in frames:
                    self._answered(status, payload)
            self._gone("the signer process stopped (end of its output)")
        except Exception as exc:  # anything else must not leave waiters
            self._gone(f"the signer process stopped ({type(exc).__name__})")

    def _answered(self, status: bytes, payload: bytes) -> None:
        future, _ = self.waiting.popleft()
        if future.done():
            return
        if status == b"+":
            future.set_result(payload)
        else:
            why = payload.decode("utf-8", "replace")
            future.set_exception(SignerUnavailable(why, gone=False))

    def _gone(self, why: str) -> None:
        self.alive = False
        if self._watch is not None:
            self._watch.cancel()
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(SignerUnavailable(why, gone=True))

    def sign(self, key: dkim.SigningKey, mime: bytes) -> asyncio.Future[bytes]:
        key_id, spec = _key_frame(key)
        loop = asyncio.get_running_loop()
        if not self._out:  # the frames of one turn of the loop go in one write
            loop.call_soon(self._flush)
        if key_id not in self.keys:
            self._out.append(_frame(b"K", spec))
            self.keys.add(key_id)
        self._out += [_HEAD.pack(b"M", len(key_id) + len(mime)), key_id, mime]
        future: asyncio.Future[bytes] = loop.create_future()
        self.waiting.append((future, loop.time() + SIGN_TIMEOUT_S))
        if self._watch is None:
            self._watch = loop.call_later(SIGN_TIMEOUT_S, self._check)
        return future

    def _flush(self) -> None:
        out, self._out = self._out, []
        stdin = self.proc.stdin
        if self.alive and stdin is not None and not stdin.is_closing():
            stdin.writelines(out)
        else:  # closed meanwhile: these messages are signed in the worker at once
            self._gone("the signer was closed")

    def _check(self) -> None:
        """The oldest message waited too long: the child is taken for stuck, killed,
        and its messages are signed in the worker. Otherwise, look again when the
        oldest one is due."""
        self._watch = None
        if not self.alive or not self.waiting:
            return
        loop = asyncio.get_running_loop()
        overdue = self.waiting[0][1]
        if loop.time() < overdue:
            self._watch = loop.call_at(overdue, self._check)
            return
        self._gone(f"a signer process did not answer within {SIGN_TIMEOUT_S:g} s")
        if self.proc.returncode is None:
            self.proc.kill()

    async def close(self) -> None:
        stdin = self.proc.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self.reader.cancel()
        self._gone("the signer was closed")


class Signer:
    """DKIM signing for one worker: in ``processes`` children (0: in the worker)."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._children: list[_Child] = []
        self._start: asyncio.Task[None] | None = None
        self._warned = False

    @property
    def pids(self) -> list[int]:
        """The live children's process ids (for CPU accounting)."""
        return [c.proc.pid for c in self._children if c.alive]

    async def sign(self, mime: bytes, key: dkim.SigningKey) -> bytes:
        """``mime`` with a DKIM-Signature header in front, as ``dkim.sign``."""
        if self.processes and key.algorithm == "rsa":
            child = await self._child()
            if child is not None:
                try:
                    return await child.sign(key, mime) + mime
                except SignerUnavailable as exc:
                    if exc.gone:
                        self._warn(str(exc))
        return dkim.sign(mime, key)

    async def start(self) -> None:
        """Start the children now rather than at the first signature."""
        if self._start is None and self.processes:
            self._start = asyncio.create_task(self._spawn())
        if self._start is not None:
            await asyncio.shield(self._start)

    async def _child(self) -> _Child | None:
        """The live child with the fewest messages waiting (started on first use)."""
        await self.start()
        alive = [c for c in self._children if c.open]
        if not alive:
            if self._children:
                self._warn("every signer process has stopped")
            return None
        return min(alive, key=lambda c: len(c.waiting))

    async def _spawn(self) -> None:
        for _ in range(self.processes):
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    __name__,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            except OSError as exc:
                self._warn(f"cannot start a signer process: {exc}")
                return
            assert proc.stdout is not None
            try:  # it says when its imports are done (and that it runs at all)
                ready = await asyncio.wait_for(proc.stdout.readexactly(_HEAD.size), START_TIMEOUT_S)
            except (TimeoutError, asyncio.IncompleteReadError) as exc:
                ready = type(exc).__name__.encode()
            if ready != _READY:
                self._warn(f"a signer process did not start ({ready!r})")
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
                return
            self._children.append(_Child(proc))

    def _warn(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("DKIM signatures are made in the worker process: %s", why)

    async def aclose(self) -> None:
        if self._start is not None:
            await asyncio.gather(self._start, return_exceptions=True)
        children, self._children = self._children, []
        await asyncio.gather(*(c.close() for c in children), return_exceptions=True)
        self._start = None


def _frame(kind: bytes, payload: bytes) -> bytes:
    return _HEAD.pack(kind, len(payload)) + payload


def _frames(data: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The whole frames at the start of ``data`` as (type, payload), and the rest (a
    frame still arriving)."""
    frames = []
    at = 0
    while len(data) - at >= _HEAD.size:
        kind, size = _HEAD.unpack_from(data, at)
        end = at + _HEAD.size + size
        if len(data) < end:
            break
        frames.append((kind, data[at + _HEAD.size : end]))
        at = end
    return frames, data[at:]


def _answer(keys: dict[bytes, dkim.SigningKey], payload: bytes) -> bytes:
    key = keys.get(payload[:32])
    if key is None:
        return _frame(b"-", b"no such key")
    try:
        pending = dkim.prepare_rsa(payload[32:], key)
    except dkim.SigningError as exc:
        return _frame(b"-", str(exc).encode())
    if pending is None:
        return _frame(b"-", b"not the plain case")
    return _frame(b"+", pending.header(pending.sign_here()))


def _serve(stdin: int, stdout: int) -> None:
    """The child: answer ``M`` frames in order until the worker closes the pipe.

    It reads whatever frames have arrived at once and writes their answers in one
    go: two system calls per batch rather than per message."""
    import signal

    # a Ctrl-C reaches the whole process group: the worker closes the pipe when done
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keys: dict[bytes, dkim.SigningKey] = {}
    os.write(stdout, _READY)
    pending = b""
    while True:
        data = os.read(stdin, 1 << 18)
        if not data:
            return
        frames, pending = _frames(pending + data)
        answers: list[bytes] = []
        for op, payload in frames:
            if op == b"K":
                domain, selector, pem = payload[32:].split(b"\0", 2)
                keys[payload[:32]] = dkim.SigningKey(domain.decode(), selector.decode(), "rsa", pem)
            else:
                answers.append(_answer(keys, payload))
        out = memoryview(b"".join(answers))
        while out:
            out = out[os.write(stdout, out) :]


if __name__ == "__main__":
    _serve(sys.stdin.fileno(), sys.stdout.fileno())

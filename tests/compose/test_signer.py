"""DKIM signing in helper processes: the same header as in the worker, and the worker
signs itself whenever a helper cannot."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

from postroom.compose import dkim as signing
from postroom.compose import signer as signer_module
from postroom.compose.signer import Signer
from postroom.templates.domains import _generate

MESSAGE = (
    b'From: "Ann  Example" <a@example.com>\r\nTo: b@example.net,\r\n\tc@example.net\r\n'
    b"Subject:  Order  42\t has shipped \r\nContent-Type: text/plain\r\n\r\n"
    b"line one  \r\nline\t\ttwo\r\n\r\n"
)


def key(selector: str = "s1") -> signing.SigningKey:
    private, _ = _generate("rsa")
    return signing.SigningKey("example.com", selector, "rsa", private)


def fixed_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signing.time, "time", lambda: 1_800_000_000.0)


async def test_the_helper_makes_the_workers_header_for_each_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signer = Signer(2)
    try:
        await signer.start()
        assert len(signer.pids) == 2
        first, rotated = key("s1"), key("s2")
        for k in (first, rotated, first):
            for n in range(3):
                message = MESSAGE + b"n=%d\r\n" % n
                signed = await signer.sign(message, k)
                # t= is the helper's clock: compare with it set to the same second here
                header = signed[: -len(message)]
                t = header.split(b"t=")[1].split(b";")[0]
                monkeypatch.setattr(signing.time, "time", lambda t=t: float(t))
                assert signed == signing.sign(message, k)
    finally:
        await signer.aclose()
    assert signer.pids == []


@pytest.mark.parametrize(
    ("sig", "why"),
    [
        (signal.SIGKILL, "the signer process stopped"),  # it dies
        (signal.SIGSTOP, "did not answer within 0.2 s"),  # alive, never answering
    ],
)
async def test_a_helper_that_dies_or_hangs_is_replaced_by_signing_in_the_worker(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, sig: int, why: str
) -> None:
    fixed_time(monkeypatch)
    monkeypatch.setattr(signer_module, "SIGN_TIMEOUT_S", 0.2)
    k = key()
    signer = Signer(1)
    try:
        await signer.start()
        (pid,) = signer.pids
        os.kill(pid, sig)
        with caplog.at_level(logging.WARNING, logger="postroom.compose.signer"):
            for _ in range(3):
                assert await signer.sign(MESSAGE, k) == signing.sign(MESSAGE, k)
        assert signer.pids == []
        assert "made in the worker process" in caplog.text and why in caplog.text
    finally:
        await signer.aclose()


async def test_what_the_helper_does_not_sign_is_signed_or_refused_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fixed_time(monkeypatch)
    k = key()
    signer = Signer(1)
    try:
        # bare LF line ends are outside the helper's plain case: dkimpy signs them here
        lf = b"From: a@example.com\nSubject: x\n\nHello\n"
        assert await signer.sign(lf, k) == signing.sign(lf, k)
        with pytest.raises(signing.SigningError):  # dkimpy's refusal, as before
            await signer.sign(b"From: a@example.com\r\nnot a header\r\n\r\nx\r\n", k)
        broken = signing.SigningKey("example.com", "s1", "rsa", b"not a key")
        with pytest.raises(signing.SigningError):
            await signer.sign(MESSAGE, broken)
        ed = signing.SigningKey("example.com", "s1", "ed25519", _generate("ed25519")[0])
        assert (await signer.sign(MESSAGE, ed)).startswith(b"DKIM-Signature: ")
    finally:
        await signer.aclose()


async def test_no_helpers_signs_in_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_time(monkeypatch)
    k = key()
    signer = Signer(0)
    await signer.start()
    assert await signer.sign(MESSAGE, k) == signing.sign(MESSAGE, k)
    assert signer.pids == []
    await signer.aclose()


async def test_one_watch_covers_every_message_however_they_arrive(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One timer watches the oldest unanswered message: signing steadily for longer
    than the timeout raises no false alarm, and after an idle spell a message to a
    helper that stopped answering is still caught within the timeout."""
    fixed_time(monkeypatch)
    monkeypatch.setattr(signer_module, "SIGN_TIMEOUT_S", 0.3)
    k = key()
    expected = signing.sign(MESSAGE, k)
    signer = Signer(1)
    loop = asyncio.get_running_loop()
    try:
        await signer.start()
        with caplog.at_level(logging.WARNING, logger="postroom.compose.signer"):
            until = loop.time() + 0.8
            while loop.time() < until:  # the helper's own clock sets t=
                signed = await signer.sign(MESSAGE, k)
                assert signed.startswith(b"DKIM-Signature: ") and signed.endswith(MESSAGE)
                await asyncio.sleep(0.05)
            assert len(signer.pids) == 1 and "did not answer" not in caplog.text
            await asyncio.sleep(0.4)  # the watch fires with nothing waiting
            (pid,) = signer.pids
            os.kill(pid, signal.SIGSTOP)
            started = loop.time()
            assert await signer.sign(MESSAGE, k) == expected
            assert loop.time() - started < 0.6
        assert signer.pids == []
        assert "did not answer within 0.3 s" in caplog.text
    finally:
        await signer.aclose()

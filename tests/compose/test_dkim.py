"""DKIM signing: the in-house rsa-sha256 path makes the header dkimpy makes, byte for byte."""

from __future__ import annotations

import dkim
import pytest
from dkim import crypto

from postroom.compose import dkim as signing
from postroom.templates.domains import _generate

MESSAGES = [
    b"From: a@example.com\r\nTo: b@example.net\r\nSubject: x\r\n\r\nHello\r\n",
    # folded headers, runs of spaces and tabs, a header twice, trailing blank lines
    b'From: "Ann  Example" <a@example.com>\r\nTo: b@example.net,\r\n\tc@example.net\r\n'
    b"Subject:  Order  42\t has shipped \r\nX-Other: not signed\r\nTo: d@example.net\r\n"
    b"Content-Type: text/plain\r\n\r\nline one  \r\nline\t\ttwo\r\n\r\n\r\n",
    # names in any case, one of them twice
    b"FROM: a@example.com\r\nsubject: one\r\nTo: b@example.net\r\nSUBJECT: two\r\n"
    b"mime-version: 1.0\r\n\r\nbody\r\n",
    # no trailing line break, and an empty body
    b"From: a@example.com\r\nSubject: y\r\n\r\nno newline at the end",
    b"From: a@example.com\r\nSubject: z\r\n\r\n",
    b"From: a@example.com\r\nSubject: z\r\n\r\n\r\n\r\n",
]


@pytest.fixture(scope="module")
def key() -> signing.SigningKey:
    private, _ = _generate("rsa")
    return signing.SigningKey("example.com", "s1", "rsa", private)


@pytest.mark.parametrize("message", MESSAGES)
def test_rsa_header_is_dkimpys_own(
    message: bytes, key: signing.SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dkim.time, "time", lambda: 1_800_000_000.0)  # the same t= in both
    monkeypatch.setattr(signing.time, "time", lambda: 1_800_000_000.0)
    fast = signing.sign(message, key)
    assert fast.endswith(message)
    # dkimpy alone: its own parser, canonicalization and pure-Python RSA
    monkeypatch.setattr(dkim, "RSASSA_PKCS1_v1_5_sign", crypto.RSASSA_PKCS1_v1_5_sign)
    present = signing._present(message)
    slow = dkim.sign(
        message,
        b"s1",
        b"example.com",
        key.private_key,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=signing._included(present),
        linesep=b"\r\n",
    )
    assert fast == slow + message


def test_unusual_messages_go_through_dkimpy(key: signing.SigningKey) -> None:
    # bare LF line ends: not the fast path, still signed (dkimpy reads them)
    lf = b"From: a@example.com\nSubject: x\n\nHello\n"
    assert signing.prepare_rsa(lf, key) is None
    assert signing.sign(lf, key).startswith(b"DKIM-Signature: ")
    # a header line dkimpy refuses: its error, as SigningError
    with pytest.raises(signing.SigningError):
        signing.sign(b"From: a@example.com\r\nnot a header\r\n\r\nx\r\n", key)


def test_a_broken_key_is_a_signing_error() -> None:
    broken = signing.SigningKey("example.com", "s1", "rsa", b"not a key")
    with pytest.raises(signing.SigningError):
        signing.sign(MESSAGES[0], broken)

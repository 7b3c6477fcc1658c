"""Raw MIME: the header-block checks and completions, and the stored job read back."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from postroom.compose import raw
from postroom.errors import MessageError

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def prepare(data: bytes) -> raw.Prepared:
    return raw.prepare(data, message_id=lambda sender: f"<x@{sender.split('@')[1]}>", now=NOW)


def test_folded_and_encoded_fields_are_read() -> None:
    prepared = prepare(
        b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.com>\r\n"
        b"To: a@example.com,\r\n b@example.com\r\n"
        b"Subject: =?utf-8?b?R3LDvMOfZQ==?=\r\n"
        b"\r\nbody"
    )
    assert prepared.header_from == "j@example.com"
    assert prepared.to == ("a@example.com", "b@example.com")
    assert prepared.subject == "Grüße"
    assert prepared.message_id == "<x@example.com>"
    assert prepared.mime.startswith(b"Message-ID: <x@example.com>\r\nDate: Thu, 01 Jan 2026")


def test_folded_bcc_is_removed_whole() -> None:
    prepared = prepare(
        b"From: a@example.com\r\nBcc: b@example.com,\r\n c@example.com\r\nTo: d@example.com\r\n"
        b"Date: x\r\nMessage-ID: <m@x>\r\n\r\nhi"
    )
    assert prepared.bcc == ("b@example.com", "c@example.com")
    assert (
        prepared.mime
        == b"From: a@example.com\r\nTo: d@example.com\r\nDate: x\r\nMessage-ID: <m@x>\r\n\r\nhi"
    )


@pytest.mark.parametrize(
    "data",
    [
        b"From: a@example.com\r\nFrom: b@example.com\r\n\r\nhi",
        b" From: a@example.com\r\n\r\nhi",
        b"From: a@example.com\r\nX-Bad: \x00\r\n\r\nhi",
        b"Subject: no sender\r\n\r\nhi",
    ],
)
def test_malformed_header_blocks_are_refused(data: bytes) -> None:
    with pytest.raises(MessageError):
        prepare(data)


def test_outgoing_reads_the_structure_back_for_json_esps() -> None:
    mime = (
        b"From: a@example.com\r\nTo: b@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nplain text\r\n"
        b"--B\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="a.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n--B--\r\n"
    )
    data = {
        "raw": {
            "mime": base64.b64encode(mime).decode(),
            "mailFrom": "bounce@example.com",
            "messageId": "<m@example.com>",
        },
        "request": {
            "to": [
                {"email": "b@example.com", "type": "to"},
                {"email": "c@example.com", "type": "bcc"},
            ],
            "subject": "s",
        },
    }
    message = raw.outgoing("id-1", data)
    assert message.mime == mime
    assert message.envelope_from == "bounce@example.com"
    assert message.envelope_to == ("b@example.com", "c@example.com")
    assert message.text == "plain text"
    assert [(a.filename, a.content) for a in message.attachments] == [("a.pdf", b"%PDF")]


@pytest.mark.parametrize(
    "value",
    [
        "ann@example.com",
        "Ann <ann@example.com>",
        " Mr. Ann Smith <ann@example.com> ",
        '"Smith, Ann" <ann@example.com>',
        "ann@example.com, bob@example.com",
        "Ann <ann@example.com>, Bob <bob@example.com>",
        "undisclosed-recipients:;",
        "ann@example.com (Ann)",
        "<ann@example.com",
    ],
)
def test_fast_address_parsing_agrees_with_the_stdlib(value: str) -> None:
    from email.utils import getaddresses

    assert raw._addresses([value]) == tuple(a for _, a in getaddresses([value]) if a)

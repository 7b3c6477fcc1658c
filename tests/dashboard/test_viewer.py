"""Reading MIME for the viewer: bodies with odd charsets, attachments in any part."""

from __future__ import annotations

from postroom.dashboard.messages import _attachments, _body, _parse


def test_an_unknown_charset_still_shows_the_body() -> None:
    msg = _parse(b"Subject: x\r\nContent-Type: text/plain; charset=x-bogus\r\n\r\nhello\r\n")
    assert _body(msg, "plain") == "hello\r\n"
    assert _body(msg, "html") is None


def test_attachments_are_every_part_but_the_bodies() -> None:
    mime = (
        b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
        b"--B\r\nContent-Type: text/html\r\n\r\n<p>body</p>\r\n"
        b"--B\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
        b'filename="a.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n--B--\r\n'
    )
    parts = _attachments(_parse(mime))
    assert [(p.filename, p.content_type, p.size) for p, _ in parts] == [
        ("a.pdf", "application/pdf", 4)
    ]

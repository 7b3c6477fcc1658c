"""The MIME composer: parsed back with the stdlib, every shape Postroom sends."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, cast

import pytest

from postroom.compose import mime
from postroom.compose.message import compose
from postroom.providers.base import Address, Attachment

NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)


def parse(raw: bytes) -> EmailMessage:
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF in output"
    return cast(EmailMessage, email.message_from_bytes(raw, policy=email.policy.default))


def build(**overrides: Any) -> EmailMessage:
    kwargs: dict[str, Any] = {
        "message_id": "<abc@example.com>",
        "date": NOW,
        "from_": Address(email="app@example.com", name="App"),
        "to": [Address(email="ann@example.com", name="Ann")],
        "subject": "Hello",
        "text": "Hello Ann",
        "html": "<p>Hello Ann</p>",
    }
    kwargs.update(overrides)
    return parse(mime.build_message(**kwargs))


def test_text_and_html_are_alternatives() -> None:
    msg = build()
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("plain",)).get_content().strip() == "Hello Ann"  # type: ignore[union-attr]
    assert msg.get_body(("html",)).get_content().strip() == "<p>Hello Ann</p>"  # type: ignore[union-attr]
    assert msg["Message-ID"] == "<abc@example.com>"
    assert msg["Date"].datetime == NOW
    assert msg["MIME-Version"] == "1.0"


@pytest.mark.parametrize(
    ("text", "html", "kind"), [("t", None, "text/plain"), (None, "<b>h</b>", "text/html")]
)
def test_single_part(text: str | None, html: str | None, kind: str) -> None:
    assert build(text=text, html=html).get_content_type() == kind


def test_non_ascii_headers_and_bodies_round_trip() -> None:
    subject = "Grüße aus München — " + "lang " * 40
    msg = build(
        subject=subject,
        from_=Address(email="app@example.com", name="Zoë, Inc."),
        to=[Address(email="jürgen@münchen.de", name="Jürgen Groß")],
        text="Grüße\n" + "ä" * 300,
    )
    assert msg["Subject"] == subject
    assert msg["From"].addresses[0].display_name == "Zoë, Inc."
    to = msg["To"].addresses[0]
    assert (to.display_name, to.domain) == ("Jürgen Groß", "xn--mnchen-3ya.de")
    body = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert body.replace("\r\n", "\n").rstrip("\n") == "Grüße\n" + "ä" * 300


def test_specials_in_names_are_quoted() -> None:
    msg = build(to=[Address(email="ann@example.com", name='Ann "The Boss", Smith')])
    assert msg["To"].addresses[0].display_name == 'Ann "The Boss", Smith'


def test_long_lines_are_wrapped_without_changing_the_text() -> None:
    line = "word " * 400
    msg = build(text=line, html=None)
    assert all(len(raw) <= 998 for raw in msg.as_bytes().split(b"\n"))
    assert msg.get_content().rstrip("\r\n") == line  # type: ignore[attr-defined]


def test_attachments_and_inline_parts() -> None:
    msg = build(
        attachments=[
            Attachment(filename="report.pdf", content=b"%PDF" * 100,
                       content_type="application/pdf"),
            Attachment(filename="logo.png", content=b"\x89PNG", content_type="image/png",
                       disposition="inline", cid="logo"),
            Attachment(filename="naïve résumé.txt", content=b"hi", content_type="text/plain"),
        ],
    )  # fmt: skip
    assert msg.get_content_type() == "multipart/mixed"
    parts = {p.get_filename(): p for p in msg.walk() if p.get_filename()}
    assert parts["report.pdf"].get_content() == b"%PDF" * 100
    assert parts["logo.png"]["Content-ID"] == "<logo>"
    assert parts["logo.png"].get_content_disposition() == "inline"
    assert parts["naïve résumé.txt"].get_content() == "hi"
    related = next(p for p in msg.walk() if p.get_content_type() == "multipart/related")
    assert related is not None


def test_compose_keeps_bcc_out_of_the_headers() -> None:
    request = {
        "from": {"email": "app@example.com"},
        "to": [
            {"email": "ann@example.com", "type": "to"},
            {"email": "bob@example.com", "type": "cc"},
            {"email": "eve@example.com", "type": "bcc"},
        ],
        "subject": "Hi",
        "content": {"text": "x"},
        "headers": {"X-Campaign": "spring"},
    }
    out = compose("1234", request, now=NOW, message_id_domain="fallback.example")
    msg = parse(out.mime)
    assert out.envelope_to == ("ann@example.com", "bob@example.com", "eve@example.com")
    assert "Bcc" not in msg and "eve@example.com" not in out.mime.decode()
    assert msg["Cc"] == "bob@example.com"
    assert msg["X-Postroom-Id"] == "1234" and msg["X-Campaign"] == "spring"
    assert out.message_id == "<1234@example.com>"

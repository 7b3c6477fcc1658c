"""RFC 5322 line limits in composed messages, and compose failures that are permanent.

Every test parses the bytes back with the stdlib parser and checks that no line is
longer than 998 octets and that what went in comes out.
"""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import EmailMessage
from typing import Any, cast

import pytest

from postroom.compose import mime
from postroom.compose.message import compose
from postroom.errors import ComposeError, MessageError
from postroom.providers.base import Address, Attachment

NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
ATTACHMENT = {"filename": "a", "content": "aGk="}


def rfc2047(raw: bytes, name: str) -> str:
    """Header ``name`` decoded as RFC 2047 says (the space between encoded-words dropped).

    The stdlib's address parser keeps that space, so it may show an extra one where a
    long encoded display name was split; this checks the exact text as MUAs decode it.
    """
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    value = re.search(rf"^{name}: (.*?)\r\n(?! )", head, re.M | re.S)
    assert value is not None
    return str(make_header(decode_header(value.group(1).replace("\r\n", ""))))


def same_words(a: str | None, b: str | None) -> bool:
    return "".join((a or "").split()) == "".join((b or "").split())


def parse(raw: bytes) -> EmailMessage:
    lines = raw.split(b"\r\n")
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF in output"
    longest = max(len(line) for line in lines)
    assert longest <= 998, f"a line of {longest} octets"
    return cast(EmailMessage, email.message_from_bytes(raw, policy=email.policy.default))


def request(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": {"email": "app@example.com"},
        "to": [{"email": "ann@example.com", "type": "to"}],
        "subject": "Hi",
        "content": {"text": "x"},
    }
    body.update(overrides)
    return body


def build_raw(**overrides: Any) -> bytes:
    kwargs: dict[str, Any] = {
        "message_id": "<abc@example.com>",
        "date": NOW,
        "from_": Address(email="app@example.com", name="App"),
        "to": [Address(email="ann@example.com", name="Ann")],
        "subject": "Hello",
        "text": "Hello Ann",
        "html": None,
    }
    kwargs.update(overrides)
    return mime.build_message(**kwargs)


def build(**overrides: Any) -> EmailMessage:
    return parse(build_raw(**overrides))


def test_a_thousand_recipients_are_folded_and_all_survive() -> None:
    to = [Address(email=f"user{n}@example.com", name=f"User {n}") for n in range(700)]
    cc = [
        Address(email=f"long.local.part.{n}@example.com", name="Jürgen Groß " * 10 + str(n))
        for n in range(300)
    ]
    raw = build_raw(to=to, cc=cc, reply_to=to[:50])
    msg = parse(raw)
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [
        (a.name, a.email) for a in to
    ]
    parsed_cc = msg["Cc"].addresses
    assert [a.addr_spec for a in parsed_cc] == [a.email for a in cc]
    assert all(same_words(p.display_name, a.name) for p, a in zip(parsed_cc, cc, strict=True))
    decoded = rfc2047(raw, "Cc")
    assert all(f"{a.name} <{a.email}>" in decoded for a in cc)
    assert len(msg["Reply-To"].addresses) == 50


@pytest.mark.parametrize(
    "name", ["Zoë " * 63 + "Z", "ü" * 255, '"Quoted", ' + "a" * 240, "a" * 255, "Zoë Groß"]
)
def test_long_names_survive_in_from(name: str) -> None:
    raw = build_raw(from_=Address(email="app@example.com", name=name))
    parsed = parse(raw)["From"].addresses[0]
    assert parsed.addr_spec == "app@example.com"
    assert same_words(parsed.display_name, name)
    if not name.isascii():
        assert rfc2047(raw, "From") == f"{name} <app@example.com>"
    else:
        assert parsed.display_name == name


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Token", "t" * 8000),  # one word: encoded-words
        ("X-Words", "word " * 1600),  # folded at the spaces
        ("X-Umlauts", "Grüße " * 1000),
        ("References", " ".join(f"<message-{n}@example.com>" for n in range(300))),
        ("List-Unsubscribe", "<https://example.com/u/" + "a" * 850 + ">, <mailto:u@example.com>"),
        ("X-" + "N" * 74, "short"),
        ("X-" + "N" * 74, "ü" * 200),
        ("Comments", "inner  double  spaces   kept"),
    ],
)
def test_long_header_values_are_folded_and_survive(name: str, value: str) -> None:
    msg = build(headers=[(name, value)])
    assert msg[name] == value


def test_structured_headers_are_folded_not_encoded() -> None:
    refs = " ".join(f"<message-{n}@example.com>" for n in range(50))
    raw = mime.build_message(
        message_id="<abc@example.com>",
        date=NOW,
        from_=Address(email="app@example.com"),
        to=[Address(email="ann@example.com")],
        subject="x",
        text="x",
        html=None,
        headers=[("References", refs)],
    )
    assert b"=?utf-8?" not in raw  # message-ids must stay readable to threading clients
    assert parse(raw)["References"] == refs


def test_a_word_too_long_for_a_structured_header_is_an_error_not_a_long_line() -> None:
    with pytest.raises(ValueError, match="998"):
        mime.build_message(
            message_id="<abc@example.com>",
            date=NOW,
            from_=Address(email="app@example.com"),
            to=[Address(email="ann@example.com")],
            subject="x",
            text="x",
            html=None,
            headers=[("References", "<" + "a" * 2000 + "@example.com>")],
        )


def test_long_subjects_survive() -> None:
    for subject in ("s" * 500, "ü" * 500, "word " * 100):
        assert build(subject=subject)["Subject"] == subject


@pytest.mark.parametrize(
    "filename",
    ["ü" * 255, "a" * 255, ("naïve résumé " * 19).strip(), ('quo"te\\s ' * 25).strip()],
)
def test_long_filenames_survive(filename: str) -> None:
    msg = build(attachments=[Attachment(filename=filename, content=b"hi")])
    [part] = [p for p in msg.walk() if p.get_filename()]
    assert part.get_filename() == filename
    assert part.get_content() == b"hi"


@pytest.mark.parametrize("subtype", ["plain", "html"])
def test_long_body_lines_are_encoded(subtype: str) -> None:
    line = "x" * 5000 + " " + "y" * 3000
    msg = build(text=line if subtype == "plain" else None, html=line if subtype == "html" else None)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_content().rstrip("\r\n") == line


def test_nul_is_never_sent_raw() -> None:
    raw = mime.build_message(
        message_id="<abc@example.com>",
        date=NOW,
        from_=Address(email="app@example.com"),
        to=[Address(email="ann@example.com")],
        subject="x",
        text="a\x00b",
        html=None,
    )
    assert b"\x00" not in raw
    msg = parse(raw)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_content().rstrip("\r\n") == "a\x00b"


def test_compose_folds_a_thousand_stored_recipients() -> None:
    recipients = [{"email": f"user{n}@example.com", "name": f"User {n}"} for n in range(1000)]
    out = compose("1", request(to=recipients), now=NOW, message_id_domain="x.example")
    assert len(parse(out.mime)["To"].addresses) == 1000


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"headers": {"X-Tag": "a\ud800"}}, "UnicodeEncodeError"),
        ({"from": {"email": "app@example.com", "name": "\ud800"}}, "UnicodeEncodeError"),
        ({"headers": {"X-Tag": "a\r\nBcc: eve@example.com"}}, "line breaks"),
        ({"headers": {"DKIM-Signature": "v=1"}}, "'DKIM-Signature' is not allowed"),
        ({"headers": {"x-postroom-id": "spoofed"}}, "set by Postroom"),
        ({"headers": {"X-" + "a" * 5000: "x"}}, "at most 76"),
        ({"attachments": [{**ATTACHMENT, "contentType": "t/" + "x" * 9999}]}, "content type"),
        ({"attachments": [{"filename": "a\ud800", "content": "aGk="}]}, "UnicodeEncodeError"),
        ({"attachments": [{"filename": "a", "content": "aGk"}]}, "Error"),
        ({"to": [{"email": "ann@example.com", "type": "to", "name": 5}]}, "cannot be composed"),
        ({"from": None}, "cannot be composed"),
    ],
)
def test_every_compose_failure_is_a_compose_error(change: dict[str, Any], words: str) -> None:
    with pytest.raises(ComposeError, match=words) as caught:
        compose("1", request(**change), now=NOW, message_id_domain="x.example")
    assert isinstance(caught.value, MessageError)  # permanent: never retried
    assert caught.value.code == "compose"
    caught.value.message.encode()  # storable: no lone surrogate in the reason


def test_compose_sets_its_own_postroom_id() -> None:
    out = compose("42", request(headers={"X-Campaign": "a"}), now=NOW, message_id_domain="x")
    msg = parse(out.mime)
    assert msg.get_all("X-Postroom-Id") == ["42"]
